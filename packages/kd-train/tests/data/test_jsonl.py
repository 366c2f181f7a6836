"""The streaming reader holds one record at a time; the writer is atomic and checks records."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import pytest
from kd_train.data import jsonl
from kd_train.data.errors import DataValidationError
from kd_train.data.jsonl import (
    IdRegistry,
    RecordWriter,
    encode_record,
    iter_lines,
    read_records,
    source_name,
    write_records,
)
from kd_train.data.schema import KDRecord, Span, TeacherTopK


def record(i: int) -> KDRecord:
    return KDRecord(id=f"r{i}", prompt=f"q{i}: ", completion=f"answer {i}")


def row(i: int) -> bytes:
    return encode_record(record(i))


class CountingReader(io.RawIOBase):
    """A binary file that counts how many bytes have been handed out so far."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._inner.readinto(buffer)
        self.consumed += n
        return n


def test_reader_streams_a_large_file_one_line_at_a_time() -> None:
    rows = 20_000
    data = b"".join(row(i) for i in range(rows))
    raw = CountingReader(data)
    records = read_records(io.BufferedReader(raw, buffer_size=8192))
    assert inspect.isgenerator(records)
    first = next(records)
    assert first.id == "r0"
    # After one record only one buffer's worth of bytes has been read, not the file.
    assert raw.consumed <= 8192 < len(data)
    count = 1
    for count, rec in enumerate(records, start=2):
        # Bytes consumed stay within one buffer of the bytes of the records yielded so far.
        if count % 5000 == 0:
            assert rec.id == f"r{count - 1}"
            assert raw.consumed <= len(b"".join(row(i) for i in range(count))) + 8192
    assert count == rows


def test_write_then_read_round_trips_every_field(tmp_path: Path) -> None:
    records = [
        KDRecord(
            id="é-1",
            prompt="Ünïcode 🙂 ",
            completion='get_weather {"city": "Paris"}',
            teacher_topk=TeacherTopK([[1, 2]], [[-0.25, -3.0]]),
            spans=[Span("tool_name", 0, 11)],
            metadata={"nested": {"a": [1, None]}},
        ),
        record(2),
    ]
    path = tmp_path / "out.jsonl"
    assert write_records(path, records) == 2
    assert list(read_records(path)) == records


def test_writer_writes_nothing_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old contents\n")

    def write_then_fail() -> None:
        with RecordWriter(path) as out:
            out.write(record(1))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert path.read_bytes() == b"old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_writer_refuses_an_invalid_record_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    bad = KDRecord(id="a", prompt="", completion="x", spans=[Span("tool_name", 0, 5)])
    with pytest.raises(DataValidationError, match=r"out\.jsonl:2: spans\[0\]"):
        write_records(path, [record(1), bad])
    assert not path.exists()


def test_writer_refuses_a_duplicate_id(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="duplicate id"):
        write_records(tmp_path / "out.jsonl", [record(1), record(1)])


def test_writer_outside_its_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        RecordWriter(tmp_path / "x.jsonl").write(record(1))


def test_reader_stops_at_the_first_invalid_row_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(row(1) + row(2) + b'{"schema_version": 1}\n' + b"garbage\n")
    records = read_records(path)
    assert [next(records).id, next(records).id] == ["r1", "r2"]
    with pytest.raises(DataValidationError) as info:
        next(records)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 3, "id")


def test_reader_rejects_duplicate_ids_naming_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(row(1) + row(2) + row(1))
    with pytest.raises(DataValidationError, match=r"d\.jsonl:3: id: .*first on line 1"):
        list(read_records(path))


@pytest.mark.parametrize("first", [2, 8])  # on disk (spilled at line 3 and 6), in memory
def test_duplicate_across_the_spill_threshold_names_both_lines(tmp_path: Path, first: int) -> None:
    seen = IdRegistry("d.jsonl", max_in_memory=3, tmp_dir=tmp_path)
    for line in range(1, 9):
        seen.add(f"id{line}", line)
    assert seen.index_path is not None
    assert seen.index_path.parent == tmp_path
    with pytest.raises(DataValidationError, match=rf'd\.jsonl:9: id: duplicate id "id{first}" '
                       rf"\(first on line {first}\)"):  # fmt: skip
        seen.add(f"id{first}", 9)


def test_spilled_id_index_is_deleted_on_close(tmp_path: Path) -> None:
    seen = IdRegistry("d.jsonl", max_in_memory=2, tmp_dir=tmp_path)
    for line in range(1, 6):
        seen.add(f"id{line}", line)
    assert seen.index_path is not None
    assert seen.index_path.exists()
    seen.close()
    assert list(tmp_path.iterdir()) == []


def test_registry_below_its_threshold_writes_no_file(tmp_path: Path) -> None:
    with IdRegistry("d.jsonl", max_in_memory=10, tmp_dir=tmp_path) as seen:
        for line in range(1, 10):
            seen.add(f"id{line}", line)
        assert (seen.index_path, list(tmp_path.iterdir())) == (None, [])


def test_reader_finds_a_spilled_duplicate_and_removes_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(jsonl, "IN_MEMORY_IDS", 2)
    monkeypatch.setattr(jsonl.tempfile, "tempdir", str(scratch))
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(row(i) for i in range(1, 7)) + row(1))
    with pytest.raises(DataValidationError, match=r"d\.jsonl:7: id: .*first on line 1"):
        list(read_records(path))
    assert list(scratch.iterdir()) == []


def test_registry_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_memory must be >= 1"):
        IdRegistry("d.jsonl", max_in_memory=0)


def test_reader_can_skip_the_duplicate_id_check(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(row(1) + row(1))
    assert len(list(read_records(path, unique_ids=False))) == 2


def test_reader_checks_topk_ids_against_the_vocabulary(tmp_path: Path) -> None:
    rec = KDRecord("a", "", "x", teacher_topk=TeacherTopK([[400]], [[-0.1]]))
    path = tmp_path / "d.jsonl"
    path.write_bytes(encode_record(rec))
    assert list(read_records(path)) == [rec]
    with pytest.raises(
        DataValidationError, match=r"ids\[0\]\[0\]: token id 400 is outside the vocabulary"
    ):
        list(read_records(path, vocab_size=320))


def test_lines_split_on_newline_only_and_crlf_is_accepted() -> None:
    data = row(1).replace(b"\n", b"\r\n") + row(2)[:-1]
    assert [r.id for r in read_records(io.BytesIO(data))] == ["r1", "r2"]


def test_blank_line_is_a_row_with_a_number() -> None:
    assert list(iter_lines(io.BytesIO(b"a\n\nb\n"))) == [(1, b"a"), (2, b""), (3, b"b")]


def test_source_name_of_a_stream() -> None:
    assert source_name(io.BytesIO(b"")) == "<stream>"
    assert source_name(Path("x.jsonl")) == "x.jsonl"


def test_encoded_line_is_compact_utf8_json() -> None:
    line = encode_record(KDRecord("é", "", "x"))
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    assert json.loads(line) == {"schema_version": 1, "id": "é", "prompt": "", "completion": "x"}
    assert "é".encode() in line
