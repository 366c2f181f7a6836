from __future__ import annotations

import dataclasses

import pytest
from kd_train.losses import LinearWarmup, weight_at
from kd_train.losses.schedule import is_active


def test_linear_warmup_ramps_after_start_step() -> None:
    ramp = LinearWarmup(start=0.2, end=1.0, warmup_steps=4, start_step=2)
    assert [round(weight_at(ramp, s), 3) for s in (0, 2, 4, 6, 9)] == [0.2, 0.2, 0.6, 1.0, 1.0]


def test_zero_warmup_jumps_at_start_step() -> None:
    ramp = LinearWarmup(start=0.0, end=2.0, warmup_steps=0, start_step=3)
    assert (ramp(2), ramp(3)) == (0.0, 2.0)


def test_constant_weight() -> None:
    assert weight_at(0.7, 10**6) == 0.7


def test_terms_with_zero_weights_are_inactive() -> None:
    assert not is_active(0.0)
    assert not is_active(LinearWarmup(0.0, 0.0))
    assert is_active(LinearWarmup(0.0, 1.0))


@pytest.mark.parametrize("kwargs", [{"warmup_steps": -1}, {"start_step": -2}])
def test_negative_steps_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=r"must be >= 0"):
        LinearWarmup(**kwargs)


def test_a_schedule_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LinearWarmup().end = 2.0  # type: ignore[misc]
