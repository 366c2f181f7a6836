"""Teacher/student vocabulary mismatch: an explicit policy, never silent padding.

``"error"`` (the default) refuses different vocabulary sizes with a message naming both.
``"truncate"`` compares the distributions on the shared ids ``0 .. min(V_s, V_t) - 1``,
renormalised there; it is right when the two tokenizers agree on those ids and one model
merely has extra (often padding) rows, as with a padded embedding matrix. For a top-k
teacher, ids the student does not have go to the tail bucket. Padding the smaller side
with zeros is refused because it invents probability mass for tokens one model cannot
produce.

>>> import torch
>>> from kd_train.losses.vocab import align_dense
>>> s, t = align_dense(torch.zeros(1, 4), torch.zeros(1, 6), "truncate")
>>> (s.shape[-1], t.shape[-1])
(4, 4)
"""

from __future__ import annotations

import torch

from kd_train.losses.checks import LossArgumentError

#: The accepted values of ``vocab_policy``.
VOCAB_POLICIES = ("error", "truncate")


def check_policy(policy: str) -> None:
    """Refuse an unknown vocabulary policy (``"pad"`` included, on purpose)."""
    if policy not in VOCAB_POLICIES:
        raise LossArgumentError(
            f"vocab_policy must be one of {', '.join(VOCAB_POLICIES)}; got {policy!r} "
            "(padding is not offered: it would invent probability mass)"
        )


def mismatch_error(student_vocab: int, teacher_vocab: int) -> LossArgumentError:
    """The error for different vocabulary sizes under the ``"error"`` policy."""
    return LossArgumentError(
        f"vocabulary mismatch: the teacher has {teacher_vocab} ids and the student "
        f"{student_vocab}; use vocab_policy='truncate' to compare the "
        f"{min(student_vocab, teacher_vocab)} shared ids if both tokenizers agree on them, "
        "or distil from a teacher with the student's tokenizer"
    )


def align_dense(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, policy: str = "error"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return student and teacher logits ``[..., V]`` over the same vocabulary.

    Raises:
        LossArgumentError: the sizes differ and ``policy`` is ``"error"``, or the policy is
            unknown.
    """
    check_policy(policy)
    vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
    if vs == vt:
        return student_logits, teacher_logits
    if policy == "error":
        raise mismatch_error(vs, vt)
    shared = min(vs, vt)
    return student_logits[..., :shared], teacher_logits[..., :shared]


def shared_vocab(student_vocab: int, teacher_vocab: int, policy: str = "error") -> int:
    """Return the number of ids both sides are compared on, or raise under ``"error"``.

    >>> from kd_train.losses.vocab import shared_vocab
    >>> shared_vocab(320, 320), shared_vocab(320, 330, "truncate")
    (320, 320)
    """
    check_policy(policy)
    if student_vocab != teacher_vocab and policy == "error":
        raise mismatch_error(student_vocab, teacher_vocab)
    return min(student_vocab, teacher_vocab)
