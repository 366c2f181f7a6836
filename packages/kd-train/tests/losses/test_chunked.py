"""The chunked lm-head path: gradients only for the inputs that ask for them."""

from __future__ import annotations

import pytest
import torch
from kd_train.losses.checks import LossArgumentError
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


def _ce_over(labels: torch.Tensor):
    def ce(logits: torch.Tensor, rows: torch.Tensor):
        value = functional.cross_entropy(logits, labels[rows], reduction="sum")
        return value, {"ce": value}

    return ce


@pytest.mark.parametrize("chunk_size", [0, -2])
def test_a_chunk_size_below_one_is_refused(chunk_size: int) -> None:
    hidden, weight = torch.randn(3, 4), torch.randn(5, 4)
    ce = _ce_over(torch.zeros(3, dtype=torch.long))
    with pytest.raises(LossArgumentError, match=rf"chunk_size must be > 0, got {chunk_size}"):
        chunked_linear_loss(hidden, weight, None, torch.arange(3), ce, chunk_size=chunk_size)


def test_under_no_grad_the_chunk_function_sees_logits_without_a_graph() -> None:
    hidden = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([1, 0, 5, 2])
    seen: list[bool] = []

    def ce(logits: torch.Tensor, rows: torch.Tensor):
        seen.append(logits.requires_grad)
        value = functional.cross_entropy(logits, labels[rows], reduction="sum")
        return value, {"ce": value}

    with torch.no_grad():
        total, _ = chunked_linear_loss(hidden, weight, None, torch.arange(4), ce, chunk_size=3)
    expected = functional.cross_entropy(hidden @ weight.T, labels, reduction="sum")
    torch.testing.assert_close(total, expected.detach())
    assert seen == [False, False]
    assert not total.requires_grad


@pytest.mark.parametrize("frozen", [True, False], ids=["constant", "other-parameter"])
def test_a_chunk_loss_that_ignores_the_logits_gives_zero_gradients(frozen: bool) -> None:
    hidden = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    other = torch.tensor(1.5, dtype=torch.float64, requires_grad=not frozen)

    def regulariser(logits: torch.Tensor, rows: torch.Tensor):
        value = other * 2.0
        return value, {"reg": value}

    total, terms = chunked_linear_loss(
        hidden, weight, bias, torch.arange(5), regulariser, chunk_size=2
    )
    assert float(total.detach()) == pytest.approx(3 * 3.0)  # three chunks of 2, 2 and 1 rows
    assert float(terms["reg"]) == pytest.approx(9.0)
    if total.requires_grad:
        total.backward()
    for tensor in (hidden, weight, bias):
        assert tensor.grad is None or not bool(tensor.grad.any())


def test_half_precision_inputs_get_gradients_of_their_own_dtype_bias_included() -> None:
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(6, 4, generator=g).to(torch.bfloat16).requires_grad_(True)
    weight = torch.randn(9, 4, generator=g).to(torch.bfloat16).requires_grad_(True)
    bias = torch.randn(9, generator=g).to(torch.bfloat16).requires_grad_(True)
    labels = torch.randint(0, 9, (6,), generator=g)

    def ce(logits: torch.Tensor, rows: torch.Tensor):
        value = functional.cross_entropy(logits.float(), labels[rows], reduction="sum")
        return value, {"ce": value}

    total, _ = chunked_linear_loss(hidden, weight, bias, torch.arange(6), ce, chunk_size=4)
    total.backward()
    dense = [t.detach().float().requires_grad_(True) for t in (hidden, weight, bias)]
    functional.cross_entropy(dense[0] @ dense[1].T + dense[2], labels, reduction="sum").backward()
    for tensor, reference in zip((hidden, weight, bias), dense, strict=True):
        assert tensor.grad is not None
        assert tensor.grad.dtype == torch.bfloat16
        torch.testing.assert_close(tensor.grad.float(), reference.grad, atol=0.1, rtol=0.05)
