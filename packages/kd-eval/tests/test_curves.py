import pytest
from kd_eval.curves import curve_points, curves_section, pareto_front
from kd_eval.errors import ConfigError


def _report(name, kl, params, p50):
    return {
        "name": name,
        "fidelity": {"aggregate": {"forward_kl": {"value": kl}}, "parameters": {"student": params}},
        "bench": {"configs": [{"latency_ms": {"p50": p50}, "peak_rss_delta_mb": params / 1e3}]},
    }


REPORTS = [
    _report("s", 0.9, 1_000, 5.0),
    _report("m", 0.5, 4_000, 4.0),  # cheaper in latency and better than s
    _report("l", 0.6, 16_000, 9.0),  # dominated by m on every axis
]


def test_pareto_front_keeps_points_nobody_dominates():
    points = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (4.0, 0.9)]
    assert pareto_front(points, higher_is_better=True) == [0, 1, 3]


def test_lower_is_better_quality_flips_dominance():
    assert pareto_front([(1.0, 2.0), (2.0, 1.0), (3.0, 1.5)], higher_is_better=False) == [0, 1]


def test_equal_points_do_not_dominate_each_other():
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)], higher_is_better=True) == [0, 1]


def test_fronts_per_cost_axis():
    section = curves_section(REPORTS, "forward_kl")
    assert section["fronts"]["parameters"] == ["s", "m"]
    assert section["fronts"]["latency_p50_ms"] == ["m"]
    assert section["higher_is_better"] is False


def test_points_carry_quality_and_costs():
    (point, *_) = curve_points(REPORTS, "forward_kl")
    assert (point.name, point.quality) == ("s", 0.9)
    assert point.costs == {"parameters": 1000.0, "latency_p50_ms": 5.0, "peak_rss_delta_mb": 1.0}


def test_a_report_without_the_quality_is_named():
    with pytest.raises(ConfigError, match="'s' has no accuracy"):
        curve_points(REPORTS, "accuracy")


def test_unknown_quality_is_refused():
    with pytest.raises(ConfigError, match="unknown quality"):
        curve_points(REPORTS, "vibes")


@pytest.mark.parametrize(
    ("report", "named"),
    [
        (_report("s", float("nan"), 1_000, 5.0), "forward_kl"),
        (_report("s", 0.9, 1_000, float("inf")), "latency_p50_ms"),
    ],
)
def test_a_non_finite_quality_or_cost_is_refused_not_put_on_every_front(report, named):
    # NaN compares false with everything: it would be undominated, on every front
    with pytest.raises(ConfigError, match=f"report 's': {named} not a finite number"):
        curves_section([report, *REPORTS[1:]], "forward_kl")


def test_a_bench_without_latency_leaves_that_cost_out():
    report = _report("s", 0.9, 1_000, 5.0)
    del report["bench"]["configs"][0]["latency_ms"]
    (point,) = curve_points([report], "forward_kl")
    assert point.costs == {"parameters": 1000.0, "peak_rss_delta_mb": 1.0}
