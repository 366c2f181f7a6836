import json
from pathlib import Path

from qa.coverage.record import build_record, record

SUMMARY = {
    "floors": [
        {
            "name": "kd_train",
            "kind": "package",
            "line": 91.2,
            "branch": 80.5,
            "floor": {"line": 90.0, "branch": 79.0},
            "status": "ok",
        }
    ],
    "modules": {
        "kd_train.b": {"line": 70.0, "branch": 50.0, "statements": 4},
        "kd_train.a": {"line": 100.0, "branch": 100.0, "statements": 2},
    },
}


def test_record_keeps_figures_floors_and_status() -> None:
    rec = build_record(SUMMARY, sha="abc", date="2026-11-29")
    assert rec["floors"] == [
        {
            "name": "kd_train",
            "kind": "package",
            "line": 91.2,
            "line_floor": 90.0,
            "branch": 80.5,
            "branch_floor": 79.0,
            "status": "ok",
        }
    ]
    assert rec["measured"] == {"sha": "abc", "date": "2026-11-29"}


def test_record_lists_modules_sorted_by_name() -> None:
    rec = build_record(SUMMARY, sha="abc", date="2026-11-29")
    assert [m["module"] for m in rec["modules"]] == ["kd_train.a", "kd_train.b"]


def test_record_writes_the_committed_file_from_the_reports(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "coverage-summary.json").write_text(json.dumps(SUMMARY))
    out = record(reports, tmp_path / "record.json")
    written = json.loads(out.read_text())
    assert written["modules"][1] == {
        "module": "kd_train.b",
        "line": 70.0,
        "branch": 50.0,
        "statements": 4,
    }
    assert written["measured"]["date"]
