"""Argument checks shared by the losses: the bounds are exact and the error names the value."""

from __future__ import annotations

import pytest
import torch
from kd_train.errors import KDTrainError
from kd_train.losses.checks import (
    LossArgumentError,
    check_floating,
    check_integer,
    check_open_unit_interval,
    check_positive,
    check_shape,
    check_unit_interval,
)


def test_loss_argument_error_is_a_kd_train_error_and_a_value_error() -> None:
    assert issubclass(LossArgumentError, KDTrainError)
    assert issubclass(LossArgumentError, ValueError)


@pytest.mark.parametrize("value", [1e-9, 0.5, 1.0 - 1e-9])
def test_open_unit_interval_accepts_values_strictly_inside(value: float) -> None:
    check_open_unit_interval("skew", value)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_open_unit_interval_refuses_its_endpoints(value: float) -> None:
    with pytest.raises(LossArgumentError, match=rf"skew must be in \(0, 1\), got {value!r}"):
        check_open_unit_interval("skew", value)


@pytest.mark.parametrize("value", [-0.5, 1.5, float("nan")])
def test_open_unit_interval_refuses_values_outside(value: float) -> None:
    with pytest.raises(LossArgumentError, match=r"skew must be in \(0, 1\)"):
        check_open_unit_interval("skew", value)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_unit_interval_accepts_its_endpoints_and_inside(value: float) -> None:
    check_unit_interval("beta", value)


@pytest.mark.parametrize("value", [-1e-9, 1.0 + 1e-9, float("nan")])
def test_unit_interval_refuses_values_outside(value: float) -> None:
    with pytest.raises(LossArgumentError, match=r"beta must be in \[0, 1\]"):
        check_unit_interval("beta", value)


@pytest.mark.parametrize("value", [0.0, -2.0, float("nan")])
def test_positive_refuses_zero_negative_and_nan(value: float) -> None:
    with pytest.raises(LossArgumentError, match=r"temperature must be > 0"):
        check_positive("temperature", value)


def test_positive_accepts_a_tiny_positive_value() -> None:
    check_positive("temperature", 1e-12)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_floating_refuses_integer_and_bool_tensors(dtype: torch.dtype) -> None:
    with pytest.raises(LossArgumentError, match=r"student_logits must be a floating-point"):
        check_floating("student_logits", torch.zeros(2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_floating_accepts_floating_tensors(dtype: torch.dtype) -> None:
    check_floating("student_logits", torch.zeros(2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.bool])
def test_integer_refuses_float_complex_and_bool_tensors(dtype: torch.dtype) -> None:
    with pytest.raises(LossArgumentError, match=r"labels must be an integer tensor"):
        check_integer("labels", torch.zeros(2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_integer_accepts_integer_tensors(dtype: torch.dtype) -> None:
    check_integer("labels", torch.zeros(2, dtype=dtype))


def test_shape_refuses_a_different_number_of_dimensions() -> None:
    expected = r"labels has shape \(2, 3\), expected \(2, 3, \*\)"
    with pytest.raises(LossArgumentError, match=expected):
        check_shape("labels", torch.zeros(2, 3), (2, 3, None))


def test_shape_refuses_a_wrong_size() -> None:
    with pytest.raises(LossArgumentError, match=r"labels has shape \(3, 5\), expected \(2, \*\)"):
        check_shape("labels", torch.zeros(3, 5), (2, None))


def test_shape_accepts_any_size_where_none_is_given() -> None:
    check_shape("labels", torch.zeros(2, 5), (2, None))
    check_shape("labels", torch.zeros(2, 1), (2, None))
