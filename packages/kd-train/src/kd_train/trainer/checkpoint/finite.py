"""Non-finite values stop a run: no NaN or inf loss is stepped on, none reaches a checkpoint.

The loop calls :func:`~kd_train.trainer.checkpoint.require_finite_step` on the step's loss
terms and gradient norm right after clipping, before the optimiser step, so the weights
never take a NaN gradient;
:func:`~kd_train.trainer.checkpoint.write_checkpoint` refuses weights or optimiser state
holding a non-finite value (a finite gradient times a huge learning rate), so the last
checkpoint written is the last good one and it stays in place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from kd_train.errors import KDTrainError

#: What the messages suggest when a run goes non-finite.
ADVICE = (
    "lower optim.lr or set train.clip_norm, check the loss weights and the data, then "
    "resume from the last checkpoint"
)


class NonFiniteError(KDTrainError):
    """A loss term, the gradient norm or a tensor to be saved is NaN or infinite."""


def require_finite_step(step: int, values: Mapping[str, float], elsewhere: bool = False) -> None:
    """Stop the run if a loss term or the gradient norm of optimiser step ``step`` is not finite.

    Args:
        step: the step being computed, 1-based (the ``step`` of its metrics row).
        values: the step's loss terms and ``grad_norm``.
        elsewhere: another process of a distributed run saw a non-finite value.

    Raises:
        NonFiniteError: naming the step and every non-finite term.

    >>> from kd_train.trainer.checkpoint.finite import require_finite_step
    >>> require_finite_step(3, {"loss": 2.5, "grad_norm": 0.7})
    >>> require_finite_step(4, {"loss": float("inf"), "kd": 1.0, "grad_norm": float("nan")})
    Traceback (most recent call last):
    ...
    kd_train.trainer.checkpoint.finite.NonFiniteError: step 4: non-finite loss=inf, \
grad_norm=nan; training stopped before the optimiser step, so no weight took it and the last \
checkpoint is kept; lower optim.lr or set train.clip_norm, check the loss weights and the \
data, then resume from the last checkpoint
    """
    bad = [f"{name}={value}" for name, value in values.items() if not math.isfinite(value)]
    if not bad and not elsewhere:
        return
    what = ", ".join(bad) if bad else "a loss term or gradient norm on another process"
    raise NonFiniteError(
        f"step {step}: non-finite {what}; training stopped before the optimiser step, so no "
        f"weight took it and the last checkpoint is kept; {ADVICE}"
    )


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first name (sorted) whose floating-point tensor holds a NaN or an infinity.

    >>> import torch
    >>> from kd_train.trainer.checkpoint.finite import first_non_finite
    >>> first_non_finite({"b": torch.tensor([1.0, float("nan")]), "a": torch.tensor([2])})
    'b'
    """
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None
