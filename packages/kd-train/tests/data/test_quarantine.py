"""Quarantine mode accounts for every row and keeps rejected rows byte for byte."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from kd_train.data.errors import DataValidationError
from kd_train.data.jsonl import encode_record
from kd_train.data.quarantine import (
    ValidationReport,
    default_quarantine_path,
    iter_valid_records,
    validate_file,
)
from kd_train.data.schema import KDRecord


def good(i: int) -> bytes:
    return encode_record(KDRecord(id=f"r{i}", prompt="p", completion=f"c{i}"))


BAD_ROWS = [
    b"not json",
    b"",
    b'{"schema_version": 1, "id": "x\xff", "prompt": "", "completion": "c"}',
    b'{"schema_version": 7, "id": "v", "prompt": "", "completion": "c"}',
    b"   \t",
]


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Good rows 1..6 with the bad rows and a duplicate interleaved (crlf on one line)."""
    lines = [
        good(1),
        BAD_ROWS[0] + b"\n",
        good(2).replace(b"\n", b"\r\n"),
        BAD_ROWS[1] + b"\n",
        good(3),
        BAD_ROWS[2] + b"\n",
        good(1),  # duplicate id
        BAD_ROWS[3] + b"\n",
        good(4),
        BAD_ROWS[4] + b"\n",
        good(5),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def test_rows_equal_accepted_plus_quarantined(mixed: Path, tmp_path: Path) -> None:
    report = validate_file(mixed, mode="quarantine", quarantine_path=tmp_path / "q.jsonl")
    assert (report.rows, report.accepted, report.quarantined) == (11, 5, 6)
    assert report.rows == report.accepted + report.quarantined
    assert dict(report.by_code) == {
        "bad_json": 1,
        "blank_line": 2,
        "non_utf8": 1,
        "duplicate_id": 1,
        "unknown_schema_version": 1,
    }
    assert report.blank_lines == 2


def test_valid_rows_go_on_in_order(mixed: Path, tmp_path: Path) -> None:
    records = iter_valid_records(mixed, mode="quarantine", quarantine_path=tmp_path / "q.jsonl")
    assert [r.id for r in records] == ["r1", "r2", "r3", "r4", "r5"]


def test_quarantined_rows_keep_their_exact_bytes_line_and_reason(
    mixed: Path, tmp_path: Path
) -> None:
    quarantine = tmp_path / "q.jsonl"
    validate_file(mixed, mode="quarantine", quarantine_path=quarantine)
    entries = [json.loads(line) for line in quarantine.read_bytes().splitlines()]
    input_lines = mixed.read_bytes().split(b"\n")
    assert [e["line"] for e in entries] == [2, 4, 6, 7, 8, 10]
    for entry in entries:
        assert base64.b64decode(entry["raw_base64"]) == input_lines[entry["line"] - 1]
        assert entry["source"] == str(mixed)
        assert entry["reason"]
    assert [base64.b64decode(e["raw_base64"]) for e in entries] == [
        BAD_ROWS[0],
        BAD_ROWS[1],
        BAD_ROWS[2],
        good(1)[:-1],
        BAD_ROWS[3],
        BAD_ROWS[4],
    ]
    assert entries[2]["raw"] is None  # not UTF-8: only the base64 form exists
    assert entries[3]["field"] == "id"
    assert entries[3]["code"] == "duplicate_id"


def test_quarantine_file_is_written_even_when_nothing_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_bytes(good(1))
    quarantine = tmp_path / "q.jsonl"
    report = validate_file(path, mode="quarantine", quarantine_path=quarantine)
    assert (report.accepted, report.quarantined) == (1, 0)
    assert quarantine.read_bytes() == b""


def test_strict_mode_stops_at_the_first_error(mixed: Path) -> None:
    report = ValidationReport(str(mixed), "strict")
    records = iter_valid_records(mixed, mode="strict", report=report)
    assert next(records).id == "r1"
    with pytest.raises(DataValidationError) as info:
        next(records)
    assert info.value.line == 2
    assert (report.rows, report.accepted, report.quarantined) == (2, 1, 1)


def test_strict_mode_writes_no_quarantine_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_bytes(good(1) + good(2))
    report = validate_file(path, quarantine_path=tmp_path / "q.jsonl")
    assert (report.accepted, report.quarantine_path) == (2, None)
    assert not (tmp_path / "q.jsonl").exists()


def test_quarantine_mode_needs_a_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quarantine_path"):
        validate_file(tmp_path / "x.jsonl", mode="quarantine")


def test_unknown_mode_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="strict, quarantine"):
        validate_file(tmp_path / "x.jsonl", mode="lenient")  # type: ignore[arg-type]


def test_rejections_are_logged_not_silent(
    mixed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kd_train.data.quarantine"):
        validate_file(mixed, mode="quarantine", quarantine_path=tmp_path / "q.jsonl")
    assert "11 rows: 5 accepted, 6 quarantined" in caplog.text


def test_summary_lists_codes_path_and_first_examples(mixed: Path, tmp_path: Path) -> None:
    report = validate_file(mixed, mode="quarantine", quarantine_path=tmp_path / "q.jsonl")
    text = report.summary()
    assert text.splitlines()[0] == (
        f"{mixed}: 11 rows: 5 accepted, 6 quarantined (bad_json 1, blank_line 2, "
        "duplicate_id 1, non_utf8 1, unknown_schema_version 1)"
    )
    assert f"rejected rows: {tmp_path / 'q.jsonl'}" in text
    assert len(report.examples) == 5
    assert f"{mixed}:2: invalid JSON" in text


def test_report_as_dict(mixed: Path, tmp_path: Path) -> None:
    report = validate_file(mixed, mode="quarantine", quarantine_path=tmp_path / "q.jsonl")
    data = report.to_dict()
    assert (data["rows"], data["accepted"], data["quarantined"], data["blank_lines"]) == (
        11,
        5,
        6,
        2,
    )
    assert data["mode"] == "quarantine"


def test_default_quarantine_path_sits_next_to_the_input() -> None:
    assert default_quarantine_path(Path("/d/train.jsonl")) == Path("/d/train.quarantine.jsonl")
