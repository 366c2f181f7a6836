"""Per-token fidelity metrics between a teacher and a student distribution.

Shapes: logits ``[T, V]`` for the ``T`` positions that predict completion tokens, and the
completion tokens themselves ``targets [T]``. With ``p = softmax(teacher)`` and
``q = softmax(student)``:

* forward KL ``KL(p‖q)_t = Σ_v p_tv (log p_tv - log q_tv)``  (nats, >= 0)
* top-1 agreement ``a_t = [argmax p_t = argmax q_t]``
* top-k overlap ``o_t = |topk(p_t) ∩ topk(q_t)| / k``
* negative log-likelihood ``nll_t = -log p_t[targets_t]`` (and the same for ``q``);
  perplexity is ``exp(mean_t nll_t)``.

Degenerate inputs: zero positions (``T = 0``) give empty ``[0]`` tensors, the values of no
token; a mean over them (a KL or a perplexity of zero tokens) has no value, so
:func:`kd_eval.fidelity.run.encode_example` refuses an empty completion and
:func:`kd_eval.stats.bootstrap.bootstrap_mean` refuses weights that sum to 0. Refused with
:class:`~kd_eval.errors.MetricInputError`: logits of different shapes, an empty vocabulary
(``V = 0``), targets that are not ``[T]`` or fall outside ``[0, V)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from kd_eval.errors import MetricInputError


@dataclass(frozen=True)
class TokenMetrics:
    """Per-token values, each a float tensor ``[T]``."""

    forward_kl: torch.Tensor
    top1_agreement: torch.Tensor
    topk_overlap: torch.Tensor
    teacher_nll: torch.Tensor
    student_nll: torch.Tensor


def token_metrics(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, targets: torch.Tensor, k: int = 5
) -> TokenMetrics:
    """Compute the per-token fidelity metrics (see the module docstring for the formulas).

    Args:
        teacher_logits: ``[T, V]``.
        student_logits: ``[T, V]`` (same ``V``).
        targets: ``[T]`` token ids of the completion.
        k: the ``k`` of the top-k overlap (clamped to ``V``).

    >>> import torch
    >>> from kd_eval.fidelity.metrics import token_metrics
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> m = token_metrics(logits, logits, torch.tensor([0]), k=2)
    >>> float(m.forward_kl[0]), float(m.top1_agreement[0]), float(m.topk_overlap[0])
    (0.0, 1.0, 1.0)

    Raises:
        kd_eval.errors.MetricInputError: see the module docstring.
    """
    if teacher_logits.shape != student_logits.shape or teacher_logits.dim() != 2:
        raise MetricInputError(
            f"teacher logits {tuple(teacher_logits.shape)} and student logits "
            f"{tuple(student_logits.shape)} differ or are not [T, V]"
        )
    positions, vocab = teacher_logits.shape
    if vocab == 0:
        raise MetricInputError("logits over an empty vocabulary (V = 0) have no distribution")
    if targets.shape != (positions,):
        raise MetricInputError(f"targets {tuple(targets.shape)} are not [T] with T={positions}")
    if positions and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise MetricInputError(f"a target id is outside the vocabulary [0, {vocab})")
    log_p = F.log_softmax(teacher_logits.double(), dim=-1)
    log_q = F.log_softmax(student_logits.double(), dim=-1)
    kl = torch.sum(log_p.exp() * (log_p - log_q), dim=-1).clamp_min(0.0)
    agree = (log_p.argmax(-1) == log_q.argmax(-1)).double()
    kk = min(k, log_p.shape[-1])
    top_p = log_p.topk(kk, dim=-1).indices
    top_q = log_q.topk(kk, dim=-1).indices
    overlap = (top_p.unsqueeze(-1) == top_q.unsqueeze(-2)).any(-1).double().sum(-1) / kk
    idx = targets.unsqueeze(-1)
    return TokenMetrics(
        forward_kl=kl,
        top1_agreement=agree,
        topk_overlap=overlap,
        teacher_nll=-log_p.gather(-1, idx).squeeze(-1),
        student_nll=-log_q.gather(-1, idx).squeeze(-1),
    )
