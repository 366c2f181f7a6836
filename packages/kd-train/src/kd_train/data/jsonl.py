r"""Streaming JSONL I/O for KD datasets: one record in memory at a time, atomic writes.

Reading goes line by line through a buffered binary file (never ``readlines``), so memory
stays flat whatever the dataset size; the only state that grows is the map of ids already
seen (``id -> line``), kept to reject duplicates — pass ``unique_ids=False`` to drop it.
A line ends at ``\n``; the newline after the last line is optional, and a ``\r`` before it
is ignored. Line numbers are 1-based.

Writing goes to a temporary sibling of the target, which is flushed, ``fsync``-ed and
renamed over the target when the ``with`` block ends (:func:`kd_train.atomic.atomic_open`):
a reader sees the old file or the complete new one, never a half-written one. Every record
is checked before it is written, so a file this module writes is one it reads back.

>>> import tempfile, pathlib
>>> from kd_train.data.jsonl import RecordWriter, read_records
>>> from kd_train.data.schema import KDRecord
>>> path = pathlib.Path(tempfile.mkdtemp()) / "train.jsonl"
>>> with RecordWriter(path) as out:
...     out.write(KDRecord(id="a", prompt="2+2=", completion="4"))
...     out.write(KDRecord(id="b", prompt="3+3=", completion="6"))
>>> [r.completion for r in read_records(path)]
['4', '6']
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from kd_train.atomic import atomic_open
from kd_train.data.errors import DataValidationError
from kd_train.data.schema import KDRecord
from kd_train.data.validate import check_dict, parse_line

# What a reader accepts: a path, or a binary file object opened by the caller.
Source = str | Path | IO[bytes]


def iter_lines(source: Source) -> Iterator[tuple[int, bytes]]:
    r"""Yield ``(line_number, raw_bytes)`` for every line, newline (and ``\r``) removed.

    Blank lines are yielded too (as ``b""``): they count as rows and are reported.

    >>> import io
    >>> from kd_train.data.jsonl import iter_lines
    >>> list(iter_lines(io.BytesIO(b'{"a": 1}\r\n\nlast')))
    [(1, b'{"a": 1}'), (2, b''), (3, b'last')]
    """
    with contextlib.ExitStack() as stack:
        handle = (
            stack.enter_context(open(source, "rb")) if isinstance(source, str | Path) else source
        )
        for number, raw in enumerate(handle, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            yield number, raw


def source_name(source: Source) -> str:
    """Return the name used for ``source`` in error messages (its path, or ``<stream>``)."""
    if isinstance(source, str | Path):
        return str(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


class IdRegistry:
    """The ids seen so far in one file, to reject a duplicate with both line numbers.

    >>> from kd_train.data.errors import DataValidationError
    >>> from kd_train.data.jsonl import IdRegistry
    >>> seen = IdRegistry("d.jsonl")
    >>> seen.add("a", 1)
    >>> try:
    ...     seen.add("a", 4)
    ... except DataValidationError as err:
    ...     print(err)
    d.jsonl:4: id: duplicate id "a" (first on line 1); ids must be unique in a dataset
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._first_line: dict[str, int] = {}

    def add(self, record_id: str, line: int) -> None:
        """Remember ``record_id``; raise if it was seen on an earlier line.

        Raises:
            DataValidationError: a duplicate id (the message names both lines).
        """
        first = self._first_line.setdefault(record_id, line)
        if first != line:
            raise DataValidationError(
                self.path,
                line,
                "id",
                "duplicate_id",
                f"duplicate id {json.dumps(record_id)[:60]} (first on line {first}); "
                "ids must be unique in a dataset",
            )


def read_records(
    source: Source, *, vocab_size: int | None = None, unique_ids: bool = True
) -> Iterator[KDRecord]:
    """Yield the records of a JSONL dataset one at a time; stop at the first invalid row.

    This is the ``strict`` mode; :func:`kd_train.data.quarantine.iter_valid_records` is the
    one that sets bad rows aside and goes on.

    Args:
        source: a path, or a binary file object (read line by line, not closed here).
        vocab_size: when given, every ``teacher_topk`` id must be below it.
        unique_ids: reject a record whose ``id`` appeared on an earlier line.

    Yields:
        Each record, in file order.

    Raises:
        DataValidationError: at the first invalid row (file, line, field and reason).
    """
    name = source_name(source)
    seen = IdRegistry(name) if unique_ids else None
    for number, raw in iter_lines(source):
        record = parse_line(raw, name, number, vocab_size=vocab_size)
        if seen is not None:
            seen.add(record.id, number)
        yield record


def encode_record(record: KDRecord) -> bytes:
    r"""Return the record as one compact UTF-8 JSON line, newline included.

    >>> from kd_train.data.jsonl import encode_record
    >>> from kd_train.data.schema import KDRecord
    >>> encode_record(KDRecord(id="é", prompt="", completion="x"))
    b'{"schema_version":1,"id":"\xc3\xa9","prompt":"","completion":"x"}\n'
    """
    text = json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


class RecordWriter:
    """Stream records into a dataset file that appears atomically when the block ends.

    Each record is checked (:func:`kd_train.data.validate.check_dict`, unique ids) before
    it is written; on any exception inside the block the target is left untouched.

    Args:
        path: the dataset file to (re)write.
        vocab_size: when given, ``teacher_topk`` ids must be below it.

    Attributes:
        count: records written so far.
    """

    def __init__(self, path: str | Path, *, vocab_size: int | None = None) -> None:
        self.path = Path(path)
        self.vocab_size = vocab_size
        self.count = 0
        self._ids = IdRegistry(str(self.path))
        self._stack = contextlib.ExitStack()
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> RecordWriter:
        self._handle = self._stack.enter_context(atomic_open(self.path, "wb"))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle = None
        self._stack.__exit__(exc_type, exc, tb)

    def write(self, record: KDRecord) -> None:
        """Check ``record`` and append it as the next line."""
        if self._handle is None:
            raise RuntimeError("RecordWriter.write() called outside its `with` block")
        line = self.count + 1
        check_dict(record.to_dict(), self.path, line, vocab_size=self.vocab_size)
        self._ids.add(record.id, line)
        self._handle.write(encode_record(record))
        self.count = line


def write_records(
    path: str | Path, records: Iterable[KDRecord], *, vocab_size: int | None = None
) -> int:
    """Write ``records`` to ``path`` atomically (streaming); return how many were written."""
    with RecordWriter(path, vocab_size=vocab_size) as out:
        for record in records:
            out.write(record)
    return out.count
