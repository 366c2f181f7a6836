"""The chunked lm-head path: gradients only for the inputs that ask for them."""

from __future__ import annotations

import torch
from kd_train.losses.chunked import chunked_linear_loss
from torch.nn import functional


def test_frozen_hidden_states_still_give_the_lm_head_its_dense_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(5, 4, dtype=torch.float64, generator=g)
    weight = torch.randn(9, 4, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 9, (5,), generator=g)

    def ce(logits: torch.Tensor, rows: torch.Tensor):
        value = functional.cross_entropy(logits, labels[rows], reduction="sum")
        return value, {"ce": value}

    total, _ = chunked_linear_loss(hidden, weight, None, torch.arange(5), ce, chunk_size=2)
    total.backward()
    dense = weight.detach().clone().requires_grad_(True)
    functional.cross_entropy(hidden @ dense.T, labels, reduction="sum").backward()
    assert hidden.grad is None
    torch.testing.assert_close(weight.grad, dense.grad)
