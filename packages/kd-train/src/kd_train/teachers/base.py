"""The teacher protocol: the teacher's top-k next-token log-probs at every position.

Position ``t`` holds the teacher's distribution over the token that follows
``input_ids[:, t]`` (the same alignment as a causal LM's ``logits[:, t]``). Log-probs are
normalised over the teacher's full vocabulary, so the mass the top-k does not cover is
``tail = 1 - sum(exp(logprobs))``; see :meth:`TopK.tail_logprob`.

>>> import torch
>>> from kd_train.teachers.base import TopK
>>> logprobs = torch.log(torch.tensor([[[0.5, 0.3]]]))
>>> top = TopK(ids=torch.tensor([[[4, 7]]]), logprobs=logprobs)
>>> round(float(top.tail_logprob().exp()), 4)
0.2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class TopK:
    """Top-k teacher ids (int64 ``[B, T, k]``) and log-probs (float32 ``[B, T, k]``, <= 0)."""

    ids: torch.Tensor
    logprobs: torch.Tensor

    def tail_logprob(self) -> torch.Tensor:
        """Log of the probability mass outside the top-k, ``log(1 - Σ exp(logprobs))``, ``[B, T]``.

        Clamped at a tiny positive mass so that a top-k covering everything gives a finite value.
        """
        covered = torch.logsumexp(self.logprobs.float(), dim=-1)
        return torch.log1p(-covered.exp().clamp(max=1.0 - 1e-7))


@runtime_checkable
class Teacher(Protocol):
    """What every teacher source provides (``HFTeacher``, ``CachedTeacher``, ``HTTPTeacher``)."""

    @property
    def vocab_size(self) -> int:
        """Size of the teacher's vocabulary (ids in :class:`TopK` are below it)."""
        ...

    def topk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> TopK:
        """Return the top-``k`` log-probs at every position of ``input_ids`` ``[B, T]``."""
        ...
