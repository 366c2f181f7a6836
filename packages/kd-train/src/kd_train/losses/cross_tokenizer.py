r"""Cross-tokenizer distillation: a teacher and a student with different vocabularies.

Both sides tokenise the same text; :mod:`kd_train.data.alignment` groups their tokens into
the smallest spans of text on which the two cuts agree. Each group :math:`g` compares one
teacher measure with one student measure.

**Merging a group.** A group whose text is tokens :math:`x_1 \dots x_m` on one side gets
the distribution at its first position scaled by the probability of the rest of the
chain (the "observed" merge of TRL's GOLD):

.. math::

    \log \tilde p_g(v) = \log p(v \mid \text{prefix})
        + \sum_{k=2}^{m} \log p(x_k \mid \text{prefix}, x_{<k})

so the mass that the text of the group gets is the product over its tokens,
:math:`\tilde p_g(x_1) = \prod_k p(x_k \mid \cdot)`: a student token that covers several
teacher tokens is given the teacher's probability of that whole chain, and the other
entries keep their relative sizes. For a one-token group :math:`\tilde p_g` is the token's
own distribution. Both distributions are softened by the temperature :math:`T` first.

**``uld``** (Universal Logit Distillation, Boizard et al. 2024): the Wasserstein-1
distance between the two measures when the cost of moving mass is the same between any
two tokens, computed as the L1 distance between the probability vectors sorted in
decreasing order, the shorter one padded with zeros to the longer vocabulary:

.. math::

    \mathrm{ULD}_g = \sum_{i=1}^{\max(V_s, V_t)}
        \big| \tilde p^{s}_{g,(i)} - \tilde p^{t}_{g,(i)} \big|

It needs no vocabulary map, is symmetric, and is 0 exactly when the sorted vectors agree.

**``align``** (the GOLD-style hybrid): ids that stand for the same text on both sides
(:func:`kd_train.data.vocab_map.build_vocab_map`, pairs :math:`(s_i, t_i)`) are matched
exactly, by the generalised KL divergence of the (unnormalised) measures on them, and the
rest of each vocabulary by ULD on what is left:

.. math::

    \mathrm{ALIGN}_g = w_{kl} \sum_i \Big( \tilde p^{t}_{g}(t_i) \log
        \frac{\tilde p^{t}_{g}(t_i)}{\tilde p^{s}_{g}(s_i)} - \tilde p^{t}_{g}(t_i)
        + \tilde p^{s}_{g}(s_i) \Big)
        + w_{uld}\, \mathrm{ULD}\big(\tilde p^{s}_{g}|_{\bar S},\ \tilde p^{t}_{g}|_{\bar T}\big)

The first sum is :math:`\ge 0` and 0 only where the two agree on every matched id; on a
one-token group of mass 1 it is the forward KL over the shared ids.

The group values are summed; the caller divides by the step's token count like every
term (:mod:`kd_train.losses.masking`) and scales by :math:`T^2` when ``t2_scale`` is on.

>>> import torch
>>> from kd_train.losses.cross_tokenizer import uld
>>> p = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
>>> q = torch.log(torch.tensor([[0.1, 0.2, 0.0, 0.7]]))  # the same values, reordered
>>> uld(p, q).tolist()
[0.0]
"""

from __future__ import annotations

import torch
from torch.nn import functional

from kd_train.data.alignment import GroupIndex
from kd_train.losses.checks import LossArgumentError

#: The cross-tokenizer methods ``loss.cross_tokenizer.method`` accepts.
CROSS_TOKENIZER_METHODS = ("uld", "align")


def uld(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Sorted-probability L1 distance per row; log-measures ``[..., V_s]``, ``[..., V_t]`` in.

    The vectors of the last axis are sorted in decreasing order and the shorter one is padded
    with zeros; the result has the leading shape (``[G]`` for the loss's ``[G, V]`` groups).
    """
    s = student.exp().sort(dim=-1, descending=True).values
    t = teacher.exp().sort(dim=-1, descending=True).values
    width = max(s.shape[-1], t.shape[-1])
    s = functional.pad(s, (0, width - s.shape[-1]))
    t = functional.pad(t, (0, width - t.shape[-1]))
    return (s - t).abs().sum(dim=-1)


def matched_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    r"""Generalised KL :math:`\sum p (\log p - \log q) - p + q` per row, log-measures in.

    ``teacher`` holds :math:`\log p`, ``student`` :math:`\log q`, both ``[..., M]`` over the
    same matched ids (the last axis; the loss passes ``[G, M]``). 0 where they agree, > 0
    elsewhere, also for unnormalised measures.

    >>> import torch
    >>> from kd_train.losses.cross_tokenizer import matched_kl
    >>> p = torch.log(torch.tensor([[0.5, 0.25]]))
    >>> matched_kl(p, p).tolist(), bool(matched_kl(p - 1.0, p) > 0)
    ([0.0], True)
    """
    p, q = teacher.exp(), student.exp()
    return (p * (teacher - student) - p + q).sum(dim=-1)


def merged_log_measures(
    logits: torch.Tensor, input_ids: torch.Tensor, index: GroupIndex, temperature: float = 1.0
) -> torch.Tensor:
    """Each group's merged log-measure ``[G, V]`` (see the module docstring).

    Args:
        logits: ``[B, T, V]``, row ``t`` predicting the token at ``t + 1`` (a causal LM's).
        input_ids: ``[B, T]``, the tokens.
        index: the groups on this side.
        temperature: softening (> 0).
    """

    def soft(rows: torch.Tensor) -> torch.Tensor:
        rows = rows if rows.dtype == torch.float64 else rows.float()
        return torch.log_softmax(rows / temperature, dim=-1)

    first = soft(logits[index.first_row, index.first_pos - 1])
    rest = soft(logits[index.rest_row, index.rest_pos - 1])
    # each chained token's own log-probability: row r of ``rest``, column = that token
    tokens = rest[torch.arange(rest.shape[0]), input_ids[index.rest_row, index.rest_pos]]
    chain = first.new_zeros(first.shape[0]).index_add(0, index.rest_group, tokens)
    return first + chain[:, None]


class CrossTokenizerLoss(torch.nn.Module):
    """Per-group cross-tokenizer distances, ``uld`` or ``align`` (module docstring).

    Args:
        method: one of :data:`CROSS_TOKENIZER_METHODS`.
        temperature: softening of both sides (> 0).
        vocab_map: ``(student_ids, teacher_ids)`` pairs, needed by ``align``.
        kl_weight: :math:`w_{kl}` of ``align``.
        uld_weight: :math:`w_{uld}` of ``align``.

    Raises:
        LossArgumentError: an unknown method, or ``align`` without a vocabulary map.
    """

    student_ids: torch.Tensor
    teacher_ids: torch.Tensor

    def __init__(
        self,
        method: str,
        temperature: float = 1.0,
        vocab_map: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        kl_weight: float = 1.0,
        uld_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if method not in CROSS_TOKENIZER_METHODS:
            raise LossArgumentError(
                f"cross-tokenizer method must be one of {', '.join(CROSS_TOKENIZER_METHODS)}; "
                f"got {method!r}"
            )
        if method == "align" and vocab_map is None:
            raise LossArgumentError("the 'align' method needs the vocabulary map of both sides")
        self.method, self.temperature = method, temperature
        self.kl_weight, self.uld_weight = kl_weight, uld_weight
        pairs = vocab_map or (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
        self.register_buffer("student_ids", pairs[0].to(torch.int64), persistent=False)
        self.register_buffer("teacher_ids", pairs[1].to(torch.int64), persistent=False)

    def forward(
        self,
        student_logits: torch.Tensor,
        student_ids: torch.Tensor,
        student_groups: GroupIndex,
        teacher_logits: torch.Tensor,
        teacher_ids: torch.Tensor,
        teacher_groups: GroupIndex,
    ) -> torch.Tensor:
        """Return the distance of every group, ``[G]`` (no gradient reaches the teacher)."""
        if student_groups.first_row.numel() != teacher_groups.first_row.numel():
            raise LossArgumentError(
                f"{student_groups.first_row.numel()} student groups but "
                f"{teacher_groups.first_row.numel()} teacher groups; align both from one text"
            )
        t = self.temperature
        s_log = merged_log_measures(student_logits, student_ids, student_groups, t)
        with torch.no_grad():
            t_log = merged_log_measures(teacher_logits.detach(), teacher_ids, teacher_groups, t)
        t_log = t_log.to(s_log.dtype)
        if self.method == "uld":
            return uld(s_log, t_log)
        keep_s = torch.ones(s_log.shape[-1], dtype=torch.bool, device=s_log.device)
        keep_t = torch.ones(t_log.shape[-1], dtype=torch.bool, device=t_log.device)
        keep_s[self.student_ids] = False
        keep_t[self.teacher_ids] = False
        exact = matched_kl(s_log[:, self.student_ids], t_log[:, self.teacher_ids])
        rest = uld(s_log[:, keep_s], t_log[:, keep_t])
        return self.kl_weight * exact + self.uld_weight * rest
