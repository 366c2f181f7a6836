"""``kd-train validate-data`` through ``kd_train.cli.main``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from kd_train.cli import main
from kd_train.data.jsonl import encode_record
from kd_train.data.schema import KDRecord, TeacherTopK


def good(i: int) -> bytes:
    return encode_record(KDRecord(id=f"r{i}", prompt="p", completion=f"c{i}"))


BAD = b'{"schema_version": 1, "id": "x", "prompt": 1, "completion": "c"}\n'


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_bytes(good(1) + BAD + b"\n" + good(2))
    return path


def test_valid_file_passes_in_strict_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_bytes(good(1) + good(2))
    assert main(["validate-data", str(path)]) == 0
    assert f"{path}: 2 rows: 2 accepted, 0 quarantined" in capsys.readouterr().out


def test_strict_mode_stops_at_the_first_error_without_traceback(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-data", str(data), "--mode", "strict"]) == 2
    err = capsys.readouterr().err
    assert f"kd-train: error: {data}:2: prompt: expected a string, got integer 1" in err
    assert "Traceback" not in err
    assert ":3:" not in err


def test_quarantine_mode_writes_rejects_next_to_the_input_and_summarises(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-data", str(data), "--mode", "quarantine"]) == 0
    out = capsys.readouterr().out
    assert "4 rows: 2 accepted, 2 quarantined (blank_line 1, wrong_type 1)" in out
    quarantine = data.with_name("train.quarantine.jsonl")
    entries = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert [(e["line"], e["code"]) for e in entries] == [(2, "wrong_type"), (3, "blank_line")]
    assert base64.b64decode(entries[0]["raw_base64"]) == BAD.rstrip(b"\n")


def test_quarantine_path_and_json_summary(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "rejects" / "q.jsonl"
    code = main(
        ["validate-data", str(data), "--mode", "quarantine", "--quarantine", str(target), "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["accepted"], summary["quarantined"]) == (4, 2, 2)
    assert summary["quarantine_path"] == str(target)
    assert len(target.read_bytes().splitlines()) == 2


def test_vocab_size_rejects_topk_ids_beyond_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "topk.jsonl"
    rec = KDRecord("a", "", "x", teacher_topk=TeacherTopK([[10, 400]], [[-0.1, -3.0]]))
    path.write_bytes(encode_record(rec))
    assert main(["validate-data", str(path)]) == 0
    assert main(["validate-data", str(path), "--vocab-size", "320"]) == 2
    assert "teacher_topk.ids[0][1]: token id 400 is outside" in capsys.readouterr().err


def test_missing_file_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-data", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_quarantine_path_without_quarantine_mode_is_refused(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-data", str(data), "--quarantine", "q.jsonl"]) == 2
    assert "only used with --mode quarantine" in capsys.readouterr().err


def test_quarantine_file_must_not_be_the_input(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["validate-data", str(data), "--mode", "quarantine", "--quarantine", str(data)])
    assert code == 2
    assert "must not be the input" in capsys.readouterr().err
    assert data.read_bytes().startswith(good(1))


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_vocab_size_must_be_a_positive_integer(
    data: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate-data", str(data), "--vocab-size", value])
    assert info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
