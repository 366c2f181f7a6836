r"""Weight schedules: a loss term's weight as a function of the global step.

A weight is either a constant ``float`` or a :class:`LinearWarmup`:

.. math::

    w(s) = w_0 + (w_1 - w_0)\,\min\!\Big(1, \frac{\max(0, s - s_0)}{n}\Big)

with ``start`` :math:`w_0`, ``end`` :math:`w_1`, ``start_step`` :math:`s_0` and
``warmup_steps`` :math:`n` (``n = 0`` jumps to :math:`w_1` at :math:`s_0`).

>>> from kd_train.losses.schedule import LinearWarmup, weight_at
>>> ramp = LinearWarmup(start=0.0, end=1.0, warmup_steps=100)
>>> [weight_at(ramp, s) for s in (0, 50, 100, 1000)]
[0.0, 0.5, 1.0, 1.0]
>>> weight_at(0.3, 7)
0.3
"""

from __future__ import annotations

from dataclasses import dataclass

from kd_train.losses.checks import LossArgumentError


@dataclass(frozen=True)
class LinearWarmup:
    """A weight that moves linearly from ``start`` to ``end`` over ``warmup_steps`` steps."""

    start: float = 0.0
    end: float = 1.0
    warmup_steps: int = 0
    start_step: int = 0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise LossArgumentError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.start_step < 0:
            raise LossArgumentError(f"start_step must be >= 0, got {self.start_step}")

    def __call__(self, step: int) -> float:
        """Return the weight at global step ``step``."""
        done = max(0, step - self.start_step)
        if self.warmup_steps == 0:
            frac = 1.0 if step >= self.start_step else 0.0
        else:
            frac = min(1.0, done / self.warmup_steps)
        return self.start + (self.end - self.start) * frac


#: The weight of a loss term, a constant or a schedule.
Weight = float | LinearWarmup


def weight_at(weight: Weight, step: int) -> float:
    """Return the value of ``weight`` at global step ``step``."""
    if isinstance(weight, LinearWarmup):
        return weight(step)
    return float(weight)


def is_active(weight: Weight) -> bool:
    """Whether a term with this weight ever contributes (then it is computed and logged)."""
    if isinstance(weight, LinearWarmup):
        return weight.start != 0.0 or weight.end != 0.0
    return float(weight) != 0.0
