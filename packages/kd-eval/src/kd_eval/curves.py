"""Efficiency curves: quality against cost for several students, and their Pareto front.

Each point is one student: a quality (e.g. forward KL to the teacher, lower is better, or
accuracy, higher is better) and costs (parameters, latency p50, peak memory). A point is
on the Pareto front for one cost axis when no other point is at most as costly *and* at
least as good, with one of the two strictly better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kd_eval.errors import ConfigError

#: quality name -> (where in a report, True if higher is better).
QUALITIES: dict[str, tuple[tuple[str, ...], bool]] = {
    "forward_kl": (("fidelity", "aggregate", "forward_kl", "value"), False),
    "top1_agreement": (("fidelity", "aggregate", "top1_agreement", "value"), True),
    "accuracy": (("classification", "accuracy"), True),
    "macro_f1": (("classification", "macro_f1"), True),
    "tool_name_accuracy": (("toolcalls", "tool_name_accuracy"), True),
}

#: The cost axes, each read from a report by :func:`costs_of`.
COSTS = ("parameters", "latency_p50_ms", "peak_rss_delta_mb")


@dataclass(frozen=True)
class Point:
    """One student on the curves."""

    name: str
    quality: float
    costs: dict[str, float]


def pareto_front(points: Sequence[tuple[float, float]], *, higher_is_better: bool) -> list[int]:
    """Indices of the points ``(cost, quality)`` on the Pareto front, by increasing cost.

    >>> from kd_eval.curves import pareto_front
    >>> pareto_front([(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9)], higher_is_better=True)
    [0, 1, 3]
    >>> pareto_front([(1, 2.0), (2, 1.0), (3, 1.5)], higher_is_better=False)
    [0, 1]
    """
    sign = 1.0 if higher_is_better else -1.0
    front = []
    for i, (cost, quality) in enumerate(points):
        q = sign * quality
        dominated = any(
            c <= cost and sign * g >= q and (c < cost or sign * g > q)
            for j, (c, g) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -sign * points[i][1]))


def _dig(report: dict[str, Any], path: Sequence[str]) -> Any:
    value: Any = report
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def costs_of(report: dict[str, Any]) -> dict[str, float]:
    """Read the cost axes of a report: parameters, p50 latency and peak memory.

    Latency and memory come from the bench's first configuration, the same one for every
    student when they were benchmarked with the same settings.
    """
    costs: dict[str, float] = {}
    params = (
        _dig(report, ("fidelity", "parameters", "student"))
        or _dig(report, ("classification", "parameters"))
        or _dig(report, ("toolcalls", "parameters"))
        or _dig(report, ("bench", "parameters"))
    )
    if params:
        costs["parameters"] = float(params)
    configs = _dig(report, ("bench", "configs")) or []
    if configs and isinstance(configs[0], dict):
        for name, path in (
            ("latency_p50_ms", ("latency_ms", "p50")),
            ("peak_rss_delta_mb", ("peak_rss_delta_mb",)),
        ):
            value = _dig(configs[0], path)
            if isinstance(value, int | float) and not isinstance(value, bool):
                costs[name] = float(value)
    return costs


def curve_points(reports: Sequence[dict[str, Any]], quality: str) -> list[Point]:
    """Turn one report per student into curve points.

    A cost the report lacks leaves the student off that cost's curve.

    Raises:
        ConfigError: an unknown quality, a report that lacks it, or a quality or cost that
            is not a finite number (NaN, inf).
    """
    if quality not in QUALITIES:
        raise ConfigError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITIES)}")
    path, _ = QUALITIES[quality]
    points: list[Point] = []
    for report in reports:
        value = _dig(report, path)
        name = str(report.get("name") or f"student {len(points) + 1}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(
                f"report {name!r} has no {quality} (looked for {'.'.join(path)}); evaluate "
                "every student with the same command before plotting curves"
            )
        costs = costs_of(report)
        bad = [k for k, v in {quality: value, **costs}.items() if not math.isfinite(v)]
        if bad:  # a NaN is neither better nor worse than anything: it would sit on every front
            raise ConfigError(
                f"report {name!r}: {', '.join(bad)} not a finite number; evaluate that "
                "student again before plotting curves"
            )
        points.append(Point(name, float(value), costs))
    return points


def curves_section(reports: Sequence[dict[str, Any]], quality: str) -> dict[str, Any]:
    """Return the ``curves`` section of a report: points, and the front per cost axis."""
    points = curve_points(reports, quality)
    higher = QUALITIES[quality][1]
    fronts = {}
    for cost in COSTS:
        having = [p for p in points if cost in p.costs]
        if having:
            idx = pareto_front(
                [(p.costs[cost], p.quality) for p in having], higher_is_better=higher
            )
            fronts[cost] = [having[i].name for i in idx]
    return {
        "quality": quality,
        "higher_is_better": higher,
        "points": [{"name": p.name, "quality": p.quality, "costs": p.costs} for p in points],
        "fronts": fronts,
    }
