r"""A sparse teacher: top-k token ids and log-probs per position, plus a tail bucket.

A cached or remote teacher gives, per position, its ``k`` most likely ids and their
log-probs (normalised over the teacher's *full* vocabulary; a top-k
:class:`~kd_train.teachers.base.TeacherOutput`). Both distributions are then compared on
``k + 1`` buckets:

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

The tail's log-mass ``teacher_tail`` is used as given when the source stored it; otherwise
it is derived as :math:`\log\max(1 - \sum_j p_{i_j},\ 10^{-12})`
(:data:`~kd_train.teachers.base.MIN_DERIVED_TAIL`), finite even when a confident teacher's
top-k rounds to a sum of 1 or more.

Temperature is applied to the student's full logits before bucketing. The teacher's
softened buckets assume the tail mass :math:`m` is spread evenly over the
:math:`n = V - k` student ids outside the top-k, each holding :math:`m / n`:

.. math::

    \tilde p^{(T)} \propto \big(p_{i_1}^{1/T}, \dots, p_{i_k}^{1/T},\;
    n \, (m / n)^{1/T} = n^{1 - 1/T} m^{1/T}\big)

By concavity of :math:`x^{1/T}` this is the largest softened tail any spread of :math:`m`
can have; softening the tail as one token, :math:`m^{1/T}`, is the smallest, and biased
far more (``benchmarks/topk_tail_bias.py``; at :math:`T = 1` both are :math:`m`). Any
:class:`~kd_train.losses.divergences.Divergence` applies to the buckets.
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
from kd_train.teachers.base import MIN_DERIVED_TAIL

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
    teacher_tail: torch.Tensor | None = None,
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
        teacher_tail: log of the teacher's mass outside the top-k ``[...]`` at temperature
            1, as the source stored it; used as given. ``None`` derives it from
            ``teacher_logp``, floored at :data:`~kd_train.teachers.base.MIN_DERIVED_TAIL`.
        tail: ``"bucket"`` or ``"renormalize"`` (see the module docstring).
        temperature: applied to the teacher buckets (the tail as spread evenly).
        vocab_policy: ids ``>= V`` raise under ``"error"``; under ``"truncate"`` their mass
            joins the tail (or is dropped with ``"renormalize"``).

    Raises:
        LossArgumentError: shapes, dtypes, ids or policies are invalid.

    >>> import torch
    >>> student = torch.log_softmax(torch.zeros(1, 5), dim=-1)
    >>> ids, top = torch.tensor([[0]]), torch.tensor([[0.0]])  # rounds to all the mass
    >>> _, t = bucket_log_probs(student, ids, top)
    >>> round(float(t[0, 1]), 2)  # log(1e-12), not log(0)
    -27.63
    >>> _, t = bucket_log_probs(student, ids, top, teacher_tail=torch.tensor([0.25]).log())
    >>> [round(x, 2) for x in t.exp()[0].tolist()]  # the stored tail, renormalised
    [0.8, 0.2]
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
    if teacher_tail is not None:
        check_floating("teacher_tail", teacher_tail)
        check_shape("teacher_tail", teacher_tail, tuple(ids.shape[:-1]))
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
    if teacher_tail is None:
        # t_top has the out-of-vocabulary ids at -inf: their mass is in 1 - covered.
        covered = safe_logsumexp(t_top).clamp(max=0.0)
        t_tail = torch.log(torch.clamp(-torch.expm1(covered), min=MIN_DERIVED_TAIL))
    elif bool(outside.any()):
        dropped = teacher_logp.to(dtype).masked_fill(~outside, -math.inf)
        t_tail = safe_logsumexp(torch.cat([dropped, teacher_tail.to(dtype).unsqueeze(-1)], -1))
    else:
        t_tail = teacher_tail.to(dtype)
    # n (m / n)^(1/T) in log space: log m / T + (1 - 1/T) log n, n = student ids outside the top-k.
    n_tail = (vocab - (~outside).sum(dim=-1)).clamp(min=1).to(dtype)
    t_tail_soft = t_tail / temperature + (1.0 - 1.0 / temperature) * torch.log(n_tail)
    # When the top-k lists every student id there is no tail: what is left of the teacher's
    # mass is rounding, and matching it against an exact zero would make the KL infinite.
    t_tail_soft = t_tail_soft.masked_fill(torch.isneginf(s_tail), -math.inf)
    s_b = torch.cat([s_top, s_tail.unsqueeze(-1)], dim=-1)
    t_b = torch.cat([t_top / temperature, t_tail_soft.unsqueeze(-1)], dim=-1)
    return s_b, torch.log_softmax(t_b, dim=-1)
