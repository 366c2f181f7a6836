"""Percentile-bootstrap confidence intervals over examples, reproducible by seed.

Given per-example values ``v_i`` and weights ``w_i`` (token counts; 1 for a plain mean), the
statistic is the weighted mean ``m = Σ w_i v_i / Σ w_i``. Each of ``R`` resamples draws ``n``
example indices with replacement (``numpy.random.Generator`` seeded with ``seed``) and
recomputes ``m``; the interval is the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the ``R``
values. The examples, not the tokens, are resampled: tokens of one example are correlated.

Degenerate inputs: one example gives its value with the interval collapsed onto it; a
resample whose drawn weights sum to 0 counts as 0. Refused with
:class:`~kd_eval.errors.MetricInputError`: no example, a non-finite value or weight, a
negative weight, weights that sum to 0 (no tokens: e.g. a perplexity of zero tokens), fewer
than one resample, a confidence outside ``(0, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kd_eval.errors import MetricInputError

#: Default number of bootstrap resamples.
DEFAULT_RESAMPLES = 2000
#: Default seed of the bootstrap generator.
DEFAULT_SEED = 0
#: Default confidence level.
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (the fields as a dict)."""
        return asdict(self)

    def map(self, fn: Any) -> Estimate:
        """Apply a monotone increasing ``fn`` to the value and both ends (e.g. ``exp``)."""
        return Estimate(
            float(fn(self.value)),
            float(fn(self.low)),
            float(fn(self.high)),
            self.confidence,
            self.resamples,
            self.seed,
        )


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Estimate:
    """Weighted mean of ``values`` with a percentile-bootstrap interval.

    Args:
        values: per-example values, shape ``[n]``, ``n >= 1``.
        weights: per-example weights ``[n]`` (default: all 1).
        resamples: number of bootstrap resamples ``R``.
        seed: seed of the ``numpy.random.Generator``.
        confidence: the interval's coverage ``c`` in ``(0, 1)``.

    Returns:
        The estimate; with one example the interval collapses to the value.

    >>> from kd_eval.stats.bootstrap import bootstrap_mean
    >>> e = bootstrap_mean([1.0, 2.0, 3.0, 4.0], resamples=500, seed=0)
    >>> e.value, e.low <= 2.5 <= e.high
    (2.5, True)
    >>> bootstrap_mean([1.0, 3.0], weights=[3, 1]).value
    1.5
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or w.shape != v.shape:
        raise MetricInputError(
            f"need 1-d values and weights of one length >= 1, got {v.shape}, {w.shape}"
        )
    for name, array in (("value", v), ("weight", w)):
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise MetricInputError(f"{name} {bad[0]} is {array[bad[0]]}; every one must be finite")
    if np.any(w < 0) or np.sum(w) == 0:
        raise MetricInputError(
            "weights must be >= 0 and not all 0 (a weighted mean of no tokens is undefined)"
        )
    if resamples < 1:
        raise MetricInputError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise MetricInputError(f"confidence must be in (0, 1), got {confidence}")
    point = float(np.sum(w * v) / np.sum(w))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(resamples, v.size))
    sums = np.sum(w[idx], axis=1)
    stats = np.sum(w[idx] * v[idx], axis=1) / np.where(sums == 0, 1.0, sums)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return Estimate(
        point, float(min(low, point)), float(max(high, point)), confidence, resamples, seed
    )
