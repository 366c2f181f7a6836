r"""A sparse teacher: top-k token ids and log-probs per position, plus a tail bucket.

A cached or remote teacher gives, per position, its ``k`` most likely ids and their
log-probs (normalised over the teacher's *full* vocabulary, :class:`~kd_train.teachers.base.TopK`).
Both distributions are then compared on ``k + 1`` buckets:

.. math::

    \tilde p = (p_{i_1}, \dots, p_{i_k}, \; 1 - \textstyle\sum_j p_{i_j}), \qquad
    \tilde q = (q_{i_1}, \dots, q_{i_k}, \; 1 - \textstyle\sum_j q_{i_j})

The last bucket, the *tail*, holds the mass outside the top-k. Policy for the mass the
top-k does not cover (``tail``):

``"bucket"`` (default)
    The teacher's uncovered mass is matched, as one number, against the student's mass on
    every other id. The student is neither told how to spread it nor pushed to zero it.
``"renormalize"``
    Drop the tail: renormalise both sides over the ``k`` ids. Only the ranking inside the
    top-k is taught; right when ``k`` covers nearly all the mass.

Temperature is applied to the student's full logits before bucketing and to the teacher's
``k + 1`` buckets (treating the tail as one token, the only choice without the full
distribution). Any :class:`~kd_train.losses.divergences.Divergence` applies to the buckets.
Ids must be distinct within a position.

>>> import torch
>>> from kd_train.losses.sparse import bucket_log_probs
>>> student = torch.log_softmax(torch.zeros(1, 4), dim=-1)
>>> s, t = bucket_log_probs(student, torch.tensor([[2]]), torch.log(torch.tensor([[0.7]])))
>>> [round(x, 2) for x in s.exp()[0].tolist()], [round(x, 2) for x in t.exp()[0].tolist()]
([0.25, 0.75], [0.7, 0.3])
"""

from __future__ import annotations

import math

import torch

from kd_train.losses.checks import (
    LossArgumentError,
    check_floating,
    check_integer,
    check_positive,
    check_shape,
)
from kd_train.losses.vocab import check_policy

#: The accepted values of ``tail``.
TAIL_POLICIES = ("bucket", "renormalize")


def safe_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the last axis; an all ``-inf`` row gives ``-inf`` and a zero gradient."""
    empty = torch.isneginf(x).all(dim=-1, keepdim=True)
    out = torch.logsumexp(x.masked_fill(empty, 0.0), dim=-1)
    return out.masked_fill(empty.squeeze(-1), -math.inf)


def bucket_log_probs(
    student_logp: torch.Tensor,
    ids: torch.Tensor,
    teacher_logp: torch.Tensor,
    *,
    tail: str = "bucket",
    temperature: float = 1.0,
    vocab_policy: str = "error",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return student and teacher log-probs over the buckets, ``[..., k + 1]`` (``[..., k]``).

    Args:
        student_logp: student log-probs ``[..., V]`` (already at ``temperature``).
        ids: teacher top-k ids ``[..., k]``, distinct per position, ``>= 0``.
        teacher_logp: teacher log-probs ``[..., k]`` at temperature 1, normalised over the
            teacher's full vocabulary (their sum is at most 1).
        tail: ``"bucket"`` or ``"renormalize"`` (see the module docstring).
        temperature: applied to the teacher buckets.
        vocab_policy: ids ``>= V`` raise under ``"error"``; under ``"truncate"`` their mass
            joins the tail (or is dropped with ``"renormalize"``).

    Raises:
        LossArgumentError: shapes, dtypes, ids or policies are invalid.
    """
    if tail not in TAIL_POLICIES:
        raise LossArgumentError(f"tail must be one of {', '.join(TAIL_POLICIES)}; got {tail!r}")
    check_policy(vocab_policy)
    check_positive("temperature", temperature)
    check_floating("student_logp", student_logp)
    check_floating("teacher_logp", teacher_logp)
    check_integer("ids", ids)
    check_shape("ids", ids, (*student_logp.shape[:-1], None))
    check_shape("teacher_logp", teacher_logp, tuple(ids.shape))
    vocab = student_logp.shape[-1]
    ids = ids.long()
    if ids.numel() and int(ids.min()) < 0:
        raise LossArgumentError(f"ids must be >= 0, got {int(ids.min())}")
    dtype = torch.float64 if student_logp.dtype == torch.float64 else torch.float32
    s_full, t_top = student_logp.to(dtype), teacher_logp.to(dtype)
    outside = ids >= vocab
    if bool(outside.any()):
        if vocab_policy == "error":
            raise LossArgumentError(
                f"vocabulary mismatch: teacher top-k id {int(ids.max())} is outside the "
                f"student vocabulary of {vocab} ids; use vocab_policy='truncate' to move "
                "the teacher's mass on those ids into the tail bucket"
            )
        # A padding column of -inf gives the teacher-only ids a student probability of 0.
        pad = s_full.new_full((*s_full.shape[:-1], 1), -math.inf)
        s_full = torch.cat([s_full, pad], dim=-1)
        ids = ids.masked_fill(outside, vocab)
        t_top = t_top.masked_fill(outside, -math.inf)
    s_top = s_full.gather(-1, ids)
    if tail == "renormalize":
        return torch.log_softmax(s_top, dim=-1), torch.log_softmax(t_top / temperature, dim=-1)
    s_tail = safe_logsumexp(s_full.scatter(-1, ids, -math.inf))
    covered = safe_logsumexp(t_top).clamp(max=0.0)
    t_tail = torch.log(-torch.expm1(covered))
    # When the top-k lists every student id there is no tail: what is left of the teacher's
    # mass is rounding, and matching it against an exact zero would make the KL infinite.
    t_tail = t_tail.masked_fill(torch.isneginf(s_tail), -math.inf)
    s_b = torch.cat([s_top, s_tail.unsqueeze(-1)], dim=-1)
    t_b = torch.cat([t_top, t_tail.unsqueeze(-1)], dim=-1)
    return s_b, torch.log_softmax(t_b / temperature, dim=-1)
