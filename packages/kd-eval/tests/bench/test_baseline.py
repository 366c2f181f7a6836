import json

import pytest
from kd_eval.bench.baseline import compare_to_baseline, load_baseline
from kd_eval.errors import ConfigError


def _result(p50, decode):
    return {
        "configs": [
            {
                "seq_len": 32,
                "batch_size": 1,
                "latency_ms": {"p50": p50, "p95": p50 * 1.2, "p99": p50 * 1.5},
                "ttft_ms": {"p50": p50 / 4},
                "prefill_tokens_per_s": 1000.0 * 10 / p50,
                "decode_tokens_per_s": decode,
            }
        ]
    }


def test_a_deliberately_faster_baseline_flags_every_metric_as_regressed():
    rows = compare_to_baseline(_result(20.0, 50.0), _result(10.0, 100.0), tolerance=0.1)
    assert len(rows) == 6
    assert all(row["regressed"] for row in rows)
    latency = next(r for r in rows if r["metric"] == "latency_p50_ms")
    assert latency["ratio"] == pytest.approx(2.0)


def test_the_same_figures_do_not_regress():
    rows = compare_to_baseline(_result(10.0, 100.0), _result(10.0, 100.0), tolerance=0.0)
    assert not any(row["regressed"] for row in rows)


def test_a_slowdown_within_the_tolerance_passes():
    rows = compare_to_baseline(_result(10.5, 96.0), _result(10.0, 100.0), tolerance=0.1)
    assert not any(row["regressed"] for row in rows)


def test_throughput_regresses_when_below_baseline_over_one_plus_tolerance():
    # 100 / 1.1 = 90.9: 90 tokens/s is a regression, 91 is not.
    slow = compare_to_baseline(_result(10.0, 90.0), _result(10.0, 100.0), tolerance=0.1)
    ok = compare_to_baseline(_result(10.0, 91.0), _result(10.0, 100.0), tolerance=0.1)
    decode = [
        next(r for r in rows if r["metric"] == "decode_tokens_per_s")["regressed"]
        for rows in (slow, ok)
    ]
    assert decode == [True, False]


def test_configurations_missing_from_the_baseline_are_not_compared():
    current = _result(10.0, 100.0)
    current["configs"][0]["seq_len"] = 64
    assert compare_to_baseline(current, _result(10.0, 100.0), tolerance=0.1) == []


def test_negative_tolerance_is_refused():
    with pytest.raises(ConfigError, match="tolerance"):
        compare_to_baseline(_result(1, 1), _result(1, 1), tolerance=-0.1)


def test_baseline_file_errors_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="--save-baseline"):
        load_baseline(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(ConfigError, match="'configs' list"):
        load_baseline(bad)
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_baseline(bad)


def test_a_written_baseline_reads_back(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(_result(1.0, 2.0)))
    assert load_baseline(path) == _result(1.0, 2.0)


# -- NaN and missing values --------------------------------------------------------------


def _only(rows, metric):
    return next(r for r in rows if r["metric"] == metric)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0, "12"])
def test_a_baseline_figure_that_is_not_a_finite_positive_number_is_refused(tmp_path, bad):
    baseline = _result(10.0, 100.0)
    baseline["configs"][0]["latency_ms"]["p95"] = bad
    with pytest.raises(ConfigError, match=r"S=32 B=1 latency_p95_ms: .*re-save the baseline"):
        compare_to_baseline(_result(10.0, 100.0), baseline, tolerance=0.1)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(baseline))  # json writes NaN/Infinity, and reads them back
    with pytest.raises(ConfigError, match=rf"baseline {path}: S=32 B=1 latency_p95_ms"):
        load_baseline(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "fast"])
def test_a_current_figure_that_is_not_finite_regresses(bad):
    current = _result(10.0, 100.0)
    current["configs"][0]["decode_tokens_per_s"] = bad
    row = _only(compare_to_baseline(current, _result(10.0, 100.0), 0.1), "decode_tokens_per_s")
    assert (row["current"], row["ratio"], row["regressed"]) == (None, None, True)
    assert row["problem"].startswith("current: ")


def test_a_figure_measured_before_and_missing_now_regresses():
    current = _result(10.0, 100.0)
    del current["configs"][0]["ttft_ms"]
    row = _only(compare_to_baseline(current, _result(10.0, 100.0), 0.1), "ttft_p50_ms")
    assert (row["ratio"], row["regressed"]) == (None, True)
    assert row["problem"] == "current: not measured in this run"


def test_a_figure_missing_from_the_baseline_is_listed_not_compared():
    baseline = _result(10.0, 100.0)
    baseline["configs"][0]["decode_tokens_per_s"] = None
    row = _only(compare_to_baseline(_result(10.0, 90.0), baseline, 0.1), "decode_tokens_per_s")
    assert (row["baseline"], row["ratio"], row["regressed"]) == (None, None, False)
    assert row["problem"] == "no baseline value: not compared"


def test_a_figure_missing_from_both_gives_no_row():
    both = [_result(10.0, None), _result(10.0, None)]
    rows = compare_to_baseline(*both, tolerance=0.1)
    assert "decode_tokens_per_s" not in {r["metric"] for r in rows}
    assert all(r["problem"] is None for r in rows)


@pytest.mark.parametrize("config", [{"seq_len": 32}, {"seq_len": "32", "batch_size": 1}, []])
def test_a_configuration_without_its_shape_is_refused(tmp_path, config):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"configs": [config]}))
    with pytest.raises(ConfigError, match=r"configs\[0\] has no integer seq_len and batch_size"):
        load_baseline(path)


def test_a_non_finite_tolerance_is_refused():
    with pytest.raises(ConfigError, match="tolerance must be a finite number"):
        compare_to_baseline(_result(1, 1), _result(1, 1), tolerance=float("nan"))


def test_rows_fit_the_report_schema():
    import jsonschema
    from kd_eval.report.document import schema

    current = _result(10.0, float("nan"))
    del current["configs"][0]["ttft_ms"]
    rows = compare_to_baseline(current, _result(10.0, 100.0), tolerance=0.1)
    section = schema()["properties"]["baseline_comparison"]
    jsonschema.validate(rows, section)
