import json
from pathlib import Path

import pytest

from qa import summary


def test_table_has_one_row_per_gate_and_a_missing_gate_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary.write(summary.Summary("coverage", "42%", "40%", True), tmp_path)
    summary.write(summary.Summary("security", "1 new", "0 new", False), tmp_path)
    assert summary.main([], tmp_path) == 1
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert [(r[0], r[-1]) for r in rows] == [
        ("coverage", "pass"),
        ("mutation", "FAIL"),
        ("security", "FAIL"),
        ("docs", "FAIL"),
    ]


def test_the_table_ends_with_one_verdict_naming_the_failed_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary.write(summary.Summary("coverage", "42%", "40%", True), tmp_path)
    summary.main(["coverage", "mutation", "security"], tmp_path)
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "verdict: FAIL (1 of 3 gates passed; failed: mutation, security)"


def test_table_passes_when_every_named_gate_passed(tmp_path: Path) -> None:
    summary.write(summary.Summary("docs", "ok", "ok", True), tmp_path)
    assert summary.main(["docs"], tmp_path) == 0


def test_an_unreadable_summary_reads_as_missing(tmp_path: Path) -> None:
    (tmp_path / "gate-docs.json").write_text("{not json")
    assert summary.read("docs", tmp_path) is None
    assert summary.rows(("docs",), tmp_path)[0].figure.startswith("no summary")


def test_write_json_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"
    summary.write_json(target, {"b": 1, "a": [2]})
    summary.write_json(target, {"b": 2})
    assert target.read_text() == '{\n  "b": 2\n}\n'
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
