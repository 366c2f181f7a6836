import json

import pytest
from kd_eval.errors import ConfigError
from kd_eval.report.document import (
    SECTIONS,
    merge_reports,
    new_report,
    read_report,
    schema,
    write_report,
)
from kd_eval.tasks.classification import classification_metrics


def _classification():
    m = classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])
    return {"model": "m", "parameters": 1, "mode": "likelihood", "chance_accuracy": 0.5,
            **m.to_dict(), "examples": []}  # fmt: skip


def test_the_schema_lists_every_section_as_required():
    assert set(SECTIONS) <= set(schema()["required"])


def test_a_written_report_reads_back(tmp_path):
    report = new_report("run", classification=_classification())
    path = write_report(tmp_path / "r.json", report)
    assert read_report(path) == report
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_an_invalid_section_is_refused_before_writing(tmp_path):
    bad = new_report("run", classification={**_classification(), "accuracy": 1.5})
    with pytest.raises(ConfigError, match="classification/accuracy"):
        write_report(tmp_path / "r.json", bad)
    assert not (tmp_path / "r.json").exists()


def test_merging_combines_sections_from_several_reports():
    merged = merge_reports(
        [new_report("a", classification=_classification()), new_report("b", targets=[])], "run"
    )
    assert merged["name"] == "run"
    assert merged["classification"] is not None
    assert merged["targets"] == []


def test_the_same_section_twice_is_a_conflict():
    one = new_report("a", targets=[])
    with pytest.raises(ConfigError, match="'targets'"):
        merge_reports([one, new_report("b", targets=[])])


def test_reading_a_file_that_is_not_a_report_is_explained(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match="not a kd-eval report"):
        read_report(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_report(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_report(tmp_path / "none.json")


def test_unknown_sections_are_a_programming_error():
    with pytest.raises(ValueError, match="unknown report sections"):
        new_report("x", vibes={})


def test_headline_figures_of_every_section_kind():
    from kd_eval.report.document import headline_figures

    assert headline_figures("classification", None) == {}
    toolcalls = {
        "json_validity": 1.0,
        "tool_name_accuracy": 0.9,
        "args_f1_strict": 0.5,
        "args_f1_lax": 0.6,
        "fixture_hit_rate": 0.8,
        "n": 10,
    }
    assert headline_figures("toolcalls", toolcalls) == {
        k: v for k, v in toolcalls.items() if k != "n"
    }
    bench = {"configs": [{"seq_len": 8, "batch_size": 2, "latency_ms": {"p50": 1.5, "p95": 2.5}}]}
    assert headline_figures("bench", bench) == {"S=8 B=2 p50 ms": 1.5, "S=8 B=2 p95 ms": 2.5}
    drafter = {"aggregate": {"acceptance_rate": {"value": 0.9, "low": 0.8, "high": 1.0}}}
    assert headline_figures("drafter", drafter) == {"acceptance_rate": 0.9}
    assert headline_figures("curves", {"points": []}) == {}


def test_a_report_written_before_the_later_sections_reads_with_them_null(tmp_path):
    from kd_eval.report.document import LATER_SECTIONS

    older = new_report("old", targets=[])
    for section in LATER_SECTIONS:
        del older[section]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(older))
    report = read_report(path)
    assert all(report[section] is None for section in LATER_SECTIONS)
    # a section that existed from the start is still required
    del older["fidelity"]
    path.write_text(json.dumps(older))
    with pytest.raises(ConfigError, match="fidelity"):
        read_report(path)
