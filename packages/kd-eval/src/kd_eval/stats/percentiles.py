"""Latency percentiles, computed exactly as ``numpy.percentile`` (linear interpolation).

For sorted samples ``x_0 <= ... <= x_{n-1}`` the ``q``-th percentile sits at rank
``r = q/100 · (n-1)``; with ``i = floor(r)`` it is ``x_i + (r - i)(x_{i+1} - x_i)``.
A p99 is only meaningful with enough samples: with fewer than 100 it is an interpolation
between the largest few, so the summary records ``n`` next to the figures.

Degenerate inputs: one sample is every percentile of itself. Refused with
:class:`~kd_eval.errors.MetricInputError`: no sample (a percentile of an empty list has no
value), a non-finite sample (NaN has no place in an order), ``q`` outside ``[0, 100]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kd_eval.errors import MetricInputError

#: Minimum samples for the p99 to rest on at least one observation beyond it.
MIN_SAMPLES_FOR_P99 = 100


def percentile(samples: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0..100) of ``samples`` by linear interpolation.

    >>> from kd_eval.stats.percentiles import percentile
    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([10.0], 99)
    10.0

    Raises:
        kd_eval.errors.MetricInputError: no samples, a non-finite sample, or ``q`` outside
            ``[0, 100]``.
    """
    if len(samples) == 0:
        raise MetricInputError("percentile of no samples: nothing was measured")
    if not 0.0 <= q <= 100.0:
        raise MetricInputError(f"q must be in [0, 100], got {q}")
    bad = next((i for i, x in enumerate(samples) if not math.isfinite(x)), None)
    if bad is not None:
        raise MetricInputError(f"sample {bad} is {samples[bad]}; every sample must be finite")
    xs = sorted(samples)
    rank = q / 100.0 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (rank - lo) * (xs[hi] - xs[lo])


@dataclass(frozen=True)
class LatencySummary:
    """p50/p95/p99, mean, min and max of a set of timings (milliseconds), and their count."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> LatencySummary:
    """Summarise timings in milliseconds (refused like :func:`percentile`).

    >>> from kd_eval.stats.percentiles import summarize
    >>> s = summarize([3.0, 1.0, 2.0])
    >>> (s.n, s.p50, s.max)
    (3, 2.0, 3.0)
    """
    return LatencySummary(
        n=len(samples_ms),
        p50=percentile(samples_ms, 50),
        p95=percentile(samples_ms, 95),
        p99=percentile(samples_ms, 99),
        mean=sum(samples_ms) / len(samples_ms),
        min=min(samples_ms),
        max=max(samples_ms),
    )
