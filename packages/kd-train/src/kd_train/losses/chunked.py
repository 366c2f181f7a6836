r"""The chunked path: the loss from final hidden states and ``lm_head``, one chunk at a time.

The full logits ``[N, V]`` of a long batch (8,192 tokens x 49,152 ids is 1.6 GB in
float32, several times that with the softmax intermediates and their gradients) are never
held. For each chunk of ``C`` positions that count, the student logits
:math:`z = h W^\top + b` are computed, the per-chunk formula
(:func:`~kd_train.losses.terms.chunk_terms`) gives the chunk's weighted loss, and its
gradients with respect to the chunk's hidden states, :math:`W` and :math:`b` are computed
at once and accumulated; the chunk's logits are then freed. Peak memory holds one
chunk's ``[C, V]`` logits and intermediates.

Gradients are produced during the forward call (Liger-Kernel's design) and replayed, scaled
by the incoming gradient, in ``backward``; the path is first-order only (no double
backward). Under ``torch.no_grad`` or for inputs that need no gradient, only values are
computed. The chunk function sees ``(logits [C, V], rows [C])`` where ``rows`` index the
flattened ``[N]`` positions, so it can fetch the matching teacher rows lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from kd_train.losses.checks import LossArgumentError

#: ``(logits [C, V], rows [C]) -> (weighted loss sum, term sums)`` for one chunk.
ChunkFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """One chunk's logits ``h @ w.T + b``, ``[C, V]``."""
    return h @ w.T if b is None else torch.addmm(b, h, w.T)


class _ChunkedLinearLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        rows: torch.Tensor,
        chunk_fn: ChunkFn,
        chunk_size: int,
        terms_out: dict[str, torch.Tensor],
        grad_enabled: bool,
    ) -> torch.Tensor:
        wants = (
            grad_enabled and hidden.requires_grad,
            grad_enabled and weight.requires_grad,
            grad_enabled and bias is not None and bias.requires_grad,
        )
        grad_h = torch.zeros_like(hidden) if wants[0] else None
        acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
        grad_w = torch.zeros_like(weight, dtype=acc) if wants[1] else None
        grad_b = torch.zeros_like(bias, dtype=acc) if bias is not None and wants[2] else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        # An empty ``rows`` still runs one empty chunk, so the terms always have their keys.
        for start in range(0, max(rows.numel(), 1), chunk_size):
            idx = rows[start : start + chunk_size]
            h = hidden[idx].detach().requires_grad_(wants[0])
            w = weight.detach().requires_grad_(wants[1])
            b = bias.detach().requires_grad_(wants[2]) if bias is not None else None
            with torch.enable_grad():
                # No name keeps the chunk's logits alive: once the formula has taken their
                # log-softmax they are freed, before the backward below.
                chunk_total, chunk_terms = chunk_fn(_linear(h, w, b), idx)
            inputs = [t for t, want in zip((h, w, b), wants, strict=True) if t is not None and want]
            if inputs and chunk_total.requires_grad:
                grads = iter(torch.autograd.grad(chunk_total, inputs, allow_unused=True))
                for want, out in zip(wants, ("h", "w", "b"), strict=True):
                    if not want:
                        continue
                    g = next(grads)
                    if g is None:
                        continue
                    if out == "h" and grad_h is not None:
                        grad_h.index_add_(0, idx, g)
                    elif out == "w" and grad_w is not None:
                        grad_w.add_(g)
                    elif grad_b is not None:
                        grad_b.add_(g)
            total += chunk_total.detach()
            for name, value in chunk_terms.items():
                previous = terms_out.get(name, torch.zeros((), dtype=acc, device=total.device))
                terms_out[name] = previous + value.detach().to(acc)
        ctx.save_for_backward(
            *(g if g is not None else torch.empty(0) for g in (grad_h, grad_w, grad_b))
        )
        ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        grads: list[torch.Tensor | None] = []
        for g, present, dtype in zip(saved, ctx.present, ctx.dtypes, strict=True):
            grads.append((g * grad_output).to(dtype) if present else None)
        return (*grads, None, None, None, None, None)


def chunked_linear_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: torch.Tensor,
    chunk_fn: ChunkFn,
    chunk_size: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum ``chunk_fn`` over chunks of ``rows`` without holding more than one chunk's logits.

    Args:
        hidden: student final hidden states, flattened ``[N, H]``.
        weight: ``lm_head`` weight ``[V, H]``.
        bias: ``lm_head`` bias ``[V]`` or ``None``.
        rows: int64 ``[M]`` indices into ``N`` of the positions that count.
        chunk_fn: the per-chunk formula, returning ``(weighted sum, term sums)``.
        chunk_size: positions per chunk (> 0).

    Returns:
        The summed weighted loss (differentiable with respect to ``hidden``, ``weight``,
        ``bias``) and the summed terms (detached, for logging).

    >>> import torch
    >>> from torch.nn import functional as F
    >>> from kd_train.losses.chunked import chunked_linear_loss
    >>> h = torch.randn(6, 4, requires_grad=True)
    >>> w = torch.randn(10, 4, requires_grad=True)
    >>> y = torch.arange(6)
    >>> def ce(logits, rows):
    ...     value = F.cross_entropy(logits, y[rows], reduction="sum")
    ...     return value, {"ce": value}
    >>> total, terms = chunked_linear_loss(h, w, None, torch.arange(6), ce, chunk_size=4)
    >>> bool(torch.isclose(total, F.cross_entropy(h @ w.T, y, reduction="sum")))
    True
    """
    terms: dict[str, torch.Tensor] = {}
    if chunk_size <= 0:
        raise LossArgumentError(f"chunk_size must be > 0, got {chunk_size}")
    grad_enabled = torch.is_grad_enabled()
    total = _ChunkedLinearLoss.apply(
        hidden, weight, bias, rows, chunk_fn, chunk_size, terms, grad_enabled
    )
    return total, terms
