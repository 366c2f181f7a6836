from __future__ import annotations

import pytest
import torch
from kd_train.losses import HiddenStateLoss, LossArgumentError


def test_mse_matches_reference_on_counted_positions() -> None:
    loss = HiddenStateLoss(3, 5, [(0, 1)], kind="mse").double()
    s = [torch.randn(1, 4, 3, dtype=torch.float64)]
    t = [torch.zeros(1, 4, 5, dtype=torch.float64), torch.randn(1, 4, 5, dtype=torch.float64)]
    mask = torch.tensor([[True, False, True, True]])
    proj = loss.projections[0].weight
    diff = s[0][0] @ proj.T - t[1][0]
    expected = diff.pow(2).mean(-1)[mask[0]].sum() / 3
    torch.testing.assert_close(loss(s, t, mask, torch.tensor(3.0)), expected.float())


def test_cosine_is_zero_for_aligned_states() -> None:
    loss = HiddenStateLoss(2, 2, [(0, 0)], kind="cosine")
    with torch.no_grad():
        loss.projections[0].weight.copy_(torch.eye(2))
    h = [torch.randn(1, 3, 2)]
    value = loss(h, [h[0] * 3.0], torch.ones(1, 3, dtype=torch.bool), torch.tensor(3.0))
    assert abs(value.detach().item()) < 1e-6


def test_missing_layer_raises_naming_the_side() -> None:
    loss = HiddenStateLoss(2, 2, [(0, 5)])
    with pytest.raises(ValueError, match=r"asks for teacher layer 5 but the teacher returned 1"):
        loss(
            [torch.zeros(1, 1, 2)],
            [torch.zeros(1, 1, 2)],
            torch.ones(1, 1, dtype=torch.bool),
            torch.tensor(1.0),
        )


@pytest.mark.parametrize(
    ("args", "needle"),
    [((2, 2, [(0, 0)], "l1"), "hidden kind must be one of mse, cosine"), ((2, 2, []), "layer_map")],
)
def test_invalid_construction_raises(args: tuple, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        HiddenStateLoss(*args)


def test_teacher_states_narrower_than_the_projection_are_refused() -> None:
    # A [M, 1] teacher would broadcast silently against the [M, 4] projected student.
    loss = HiddenStateLoss(3, 4, [(0, 0)])
    with pytest.raises(LossArgumentError, match=r"project to \(2, 4\) but teacher layer 0 has"):
        loss(
            [torch.randn(1, 2, 3)],
            [torch.randn(1, 2, 1)],
            torch.ones(1, 2, dtype=torch.bool),
            torch.tensor(2.0),
        )


def test_layer_indices_count_from_the_end_down_to_the_first_layer() -> None:
    loss = HiddenStateLoss(2, 2, [(-3, -1)], kind="mse").double()
    s = [torch.randn(1, 2, 2, dtype=torch.float64) for _ in range(3)]
    t = [torch.randn(1, 2, 2, dtype=torch.float64) for _ in range(2)]
    mask = torch.tensor([[True, True]])
    proj = loss.projections[0].weight
    expected = (s[0][0] @ proj.T - t[1][0]).pow(2).mean(-1).sum() / 2.0
    torch.testing.assert_close(loss(s, t, mask, torch.tensor(2.0)), expected.float())


@pytest.mark.parametrize(("pair", "side"), [((3, 0), "student"), ((0, -3), "teacher")])
def test_a_layer_index_just_outside_the_states_is_refused(pair: tuple[int, int], side: str) -> None:
    loss = HiddenStateLoss(2, 2, [pair])
    states = [torch.zeros(1, 1, 2) for _ in range(3)]
    index = pair[1] if side == "teacher" else pair[0]
    with pytest.raises(LossArgumentError, match=rf"asks for {side} layer {index} but"):
        loss(states, states[:2], torch.ones(1, 1, dtype=torch.bool), torch.tensor(1.0))
