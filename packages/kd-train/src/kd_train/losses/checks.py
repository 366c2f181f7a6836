"""Argument checks shared by the losses, and the error they raise.

Every check raises :class:`LossArgumentError`, which is both a
:class:`~kd_train.errors.KDTrainError` (so the command line prints it without a traceback)
and a :class:`ValueError` (so callers that expect the standard "bad argument" error catch
it). The message names the argument and the value that was refused.

>>> from kd_train.losses.checks import LossArgumentError, check_unit_interval
>>> try:
...     check_unit_interval("beta", 1.5)
... except ValueError as exc:
...     print(exc)
beta must be in [0, 1], got 1.5
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kd_train.errors import KDTrainError


class LossArgumentError(KDTrainError, ValueError):
    """A loss was given an invalid argument (bad value, shape, dtype or vocabulary size)."""


def check_positive(name: str, value: float) -> None:
    """Refuse ``value <= 0`` (and NaN) for the argument ``name``."""
    if not value > 0:
        raise LossArgumentError(f"{name} must be > 0, got {value!r}")


def check_unit_interval(name: str, value: float) -> None:
    """Refuse a ``value`` outside the closed interval ``[0, 1]``."""
    if not 0.0 <= value <= 1.0:
        raise LossArgumentError(f"{name} must be in [0, 1], got {value!r}")


def check_open_unit_interval(name: str, value: float) -> None:
    """Refuse a ``value`` outside the open interval ``(0, 1)``."""
    if not 0.0 < value < 1.0:
        raise LossArgumentError(f"{name} must be in (0, 1), got {value!r}")


def check_floating(name: str, tensor: torch.Tensor) -> None:
    """Refuse a tensor that is not floating point (logits, log-probs, hidden states)."""
    if not tensor.is_floating_point():
        raise LossArgumentError(
            f"{name} must be a floating-point tensor (float32, bfloat16, ...), got dtype "
            f"{tensor.dtype}; pass logits or log-probs, not token ids"
        )


def check_integer(name: str, tensor: torch.Tensor) -> None:
    """Refuse a tensor that is not an integer tensor (labels, token ids)."""
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise LossArgumentError(
            f"{name} must be an integer tensor (int64), got dtype {tensor.dtype}"
        )


def check_shape(name: str, tensor: torch.Tensor, expected: Sequence[int | None]) -> None:
    """Refuse a tensor whose shape differs from ``expected`` (``None`` matches any size).

    >>> import torch
    >>> from kd_train.losses.checks import check_shape
    >>> check_shape("labels", torch.zeros(2, 3), (2, None))
    >>> check_shape("labels", torch.zeros(2, 3), (2, 4))
    Traceback (most recent call last):
    ...
    kd_train.losses.checks.LossArgumentError: labels has shape (2, 3), expected (2, 4)
    """
    shape = tuple(tensor.shape)
    ok = len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True)
    )
    if not ok:
        want = ", ".join("*" if e is None else str(e) for e in expected)
        got = ", ".join(str(s) for s in shape)
        raise LossArgumentError(f"{name} has shape ({got}), expected ({want})")
