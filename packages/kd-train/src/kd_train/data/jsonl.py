r"""Streaming JSONL I/O for KD datasets: one record in memory at a time, atomic writes.

Reading goes line by line through a buffered binary file (never ``readlines``), so memory
stays flat whatever the dataset size, and each line is read with a bounded ``readline``:
a line longer than :data:`MAX_RECORD_BYTES` (16 MiB; ``max_record_bytes=`` on every
reader, ``--max-record-bytes`` on ``kd-train validate-data``) is skipped in 64 KiB pieces,
never held, and reported as a row with code ``record_too_large`` naming its file and line.
A file with no line at all is refused (code ``empty_file``): an empty dataset is a mistake.
Duplicate ids are rejected through an
:class:`IdRegistry`, whose memory is bounded too: it keeps up to :data:`IN_MEMORY_IDS`
16-byte id hashes in memory, then moves them to a temporary SQLite file that is deleted
when the reading ends (pass ``unique_ids=False`` to skip the check).
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
import hashlib
import json
import os
import sqlite3
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from kd_train.atomic import atomic_open
from kd_train.data.errors import DataValidationError
from kd_train.data.schema import KDRecord
from kd_train.data.validate import check_dict, parse_line

# What a reader accepts: a path, or a binary file object opened by the caller.
Source = str | Path | IO[bytes]

#: The most bytes one record (one line, without its newline) may have; longer lines are
#: rejected without being held in memory.
MAX_RECORD_BYTES = 16 * 1024 * 1024

_SKIP_CHUNK = 64 * 1024


@dataclass(frozen=True)
class OversizedLine:
    """Stands for a line longer than the limit, which :func:`iter_lines` did not keep.

    Attributes:
        size: the line's length in bytes (newline excluded).
        limit: the limit it broke.
    """

    size: int
    limit: int

    def error(self, path: str, line: int) -> DataValidationError:
        """The :class:`~kd_train.data.errors.DataValidationError` that reports this line."""
        return DataValidationError(
            path,
            line,
            None,
            "record_too_large",
            f"record is {self.size:,} bytes, over the limit of {self.limit:,} bytes per "
            "record; split it, or raise the limit (max_record_bytes, --max-record-bytes)",
        )


def iter_lines(
    source: Source, *, max_record_bytes: int | None = None
) -> Iterator[tuple[int, bytes | OversizedLine]]:
    r"""Yield ``(line_number, raw_bytes)`` for every line, newline (and ``\r``) removed.

    Blank lines are yielded too (as ``b""``): they count as rows and are reported. A line
    over ``max_record_bytes`` (default :data:`MAX_RECORD_BYTES`) is read past in small
    pieces and yielded as an :class:`OversizedLine`, so at most one line, and never more
    than the limit, is held in memory.

    >>> import io
    >>> from kd_train.data.jsonl import iter_lines
    >>> list(iter_lines(io.BytesIO(b'{"a": 1}\r\n\nlast')))
    [(1, b'{"a": 1}'), (2, b''), (3, b'last')]
    >>> list(iter_lines(io.BytesIO(b'12345\nok'), max_record_bytes=4))
    [(1, OversizedLine(size=5, limit=4)), (2, b'ok')]
    """
    limit = MAX_RECORD_BYTES if max_record_bytes is None else max_record_bytes
    if limit < 1:
        raise ValueError(f"max_record_bytes must be >= 1, got {limit}")
    with contextlib.ExitStack() as stack:
        handle = (
            stack.enter_context(open(source, "rb")) if isinstance(source, str | Path) else source
        )
        number = 0
        while raw := handle.readline(limit + 2):  # room for the line's own "\r\n"
            number += 1
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                ended = True
            else:
                ended = len(raw) < limit + 2  # the last line, without a newline
            if raw.endswith(b"\r") and (ended or len(raw) <= limit):
                raw = raw[:-1]
            if ended and len(raw) <= limit:
                yield number, raw
                continue
            size = len(raw)
            del raw  # hold no more of an oversized line while skipping the rest
            while not ended:
                piece = handle.readline(_SKIP_CHUNK)
                ended = not piece or piece.endswith(b"\n")
                size += len(piece) - (1 if piece.endswith(b"\n") else 0)
            yield number, OversizedLine(size, limit)


def empty_file_error(path: str) -> DataValidationError:
    """The error for a dataset file with no line at all."""
    return DataValidationError(
        path, 1, None, "empty_file", "the file is empty; expected one JSON record per line"
    )


def source_name(source: Source) -> str:
    """Return the name used for ``source`` in error messages (its path, or ``<stream>``)."""
    if isinstance(source, str | Path):
        return str(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


#: Ids the :class:`IdRegistry` holds in memory before it moves them to its on-disk index.
IN_MEMORY_IDS = 100_000

#: log2 of the bits in the registry's Bloom filter over the on-disk ids (8 MiB).
_BLOOM_LOG2_BITS = 26
_BLOOM_MASK = (1 << _BLOOM_LOG2_BITS) - 1


def id_hash(record_id: str) -> bytes:
    """Return the 16-byte BLAKE2b digest of ``record_id`` (UTF-8), the registry's key.

    Two distinct ids share a digest with probability about ``n² / 2¹²⁹`` for ``n`` ids
    (below 10⁻²⁰ for a billion rows), which would be reported as a duplicate.

    >>> from kd_train.data.jsonl import id_hash
    >>> len(id_hash("a")), id_hash("a") == id_hash("a") != id_hash("b")
    (16, True)
    """
    return hashlib.blake2b(record_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class IdRegistry:
    """The ids seen so far in one file, to reject a duplicate with both line numbers.

    Memory is bounded whatever the file size: ids are kept as :func:`id_hash` digests with
    their first line, in a dict of at most ``max_in_memory`` entries (about 120 bytes
    each); when it is full, its entries move in one transaction to a temporary SQLite file
    (``index_path``: a table keyed by the digest, ``WITHOUT ROWID``) and the dict starts
    again. A lookup reads the dict, then the file — but only when a fixed 8 MiB Bloom
    filter (4 bit positions cut from the digest) says the id may be on disk, so a new id
    rarely costs a disk lookup (false positives: ~1e-5 of rows at 1M ids, ~4% at 10M).
    :meth:`close` (or the end of a ``with`` block, or garbage collection) deletes the file.

    >>> from kd_train.data.errors import DataValidationError
    >>> from kd_train.data.jsonl import IdRegistry
    >>> with IdRegistry("d.jsonl", max_in_memory=2) as seen:
    ...     for line, record_id in enumerate(["a", "b", "c", "a"], start=1):
    ...         try:
    ...             seen.add(record_id, line)
    ...         except DataValidationError as err:
    ...             print(err)
    d.jsonl:4: id: duplicate id "a" (first on line 1); ids must be unique in a dataset
    """

    def __init__(
        self, path: str, *, max_in_memory: int | None = None, tmp_dir: str | Path | None = None
    ) -> None:
        self.path = path
        self.max_in_memory = IN_MEMORY_IDS if max_in_memory is None else max_in_memory
        if self.max_in_memory < 1:
            raise ValueError(f"max_in_memory must be >= 1, got {self.max_in_memory}")
        self.index_path: Path | None = None
        self._tmp_dir = tmp_dir
        self._memory: dict[bytes, int] = {}
        self._db: sqlite3.Connection | None = None
        self._bloom = bytearray()
        self._cleanup: weakref.finalize[Any, Any] | None = None

    def add(self, record_id: str, line: int) -> None:
        """Remember ``record_id``; raise if it was seen on an earlier line.

        Raises:
            DataValidationError: a duplicate id (the message names both lines).
        """
        key = id_hash(record_id)
        first = self._memory.get(key)
        if first is None and self._db is not None and self._maybe_on_disk(key):
            row = self._db.execute("SELECT line FROM ids WHERE h = ?", (key,)).fetchone()
            first = None if row is None else int(row[0])
        if first is None:
            self._memory[key] = line
            if len(self._memory) >= self.max_in_memory:
                self._spill()
            return
        if first != line:
            raise DataValidationError(
                self.path,
                line,
                "id",
                "duplicate_id",
                f"duplicate id {json.dumps(record_id)[:60]} (first on line {first}); "
                "ids must be unique in a dataset",
            )

    def close(self) -> None:
        """Forget every id and delete the on-disk index, if there is one."""
        self._memory.clear()
        if self._cleanup is not None:
            self._cleanup()
        self._db = None

    def __enter__(self) -> IdRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spill(self) -> None:
        if self._db is None:
            handle, name = tempfile.mkstemp(prefix="kd-ids-", suffix=".sqlite", dir=self._tmp_dir)
            os.close(handle)
            self.index_path = Path(name)
            # A scratch index: no journal, no fsync; a crash loses nothing worth keeping.
            self._db = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
            self._cleanup = weakref.finalize(self, _drop_index, self._db, self.index_path)
            self._db.execute("PRAGMA page_size=16384")  # fewer, fuller pages: faster batches
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(
                "CREATE TABLE ids (h BLOB PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID"
            )
            self._bloom = bytearray(1 << (_BLOOM_LOG2_BITS - 3))
        bloom = self._bloom
        for key in self._memory:
            for bit in _bloom_bits(key):
                bloom[bit >> 3] |= 1 << (bit & 7)
        # Sorted, the batch walks the B-tree in order instead of jumping across its pages.
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO ids (h, line) VALUES (?, ?)", sorted(self._memory.items())
        )
        self._db.execute("COMMIT")
        self._memory.clear()

    def _maybe_on_disk(self, key: bytes) -> bool:
        bloom = self._bloom
        return all(bloom[bit >> 3] & (1 << (bit & 7)) for bit in _bloom_bits(key))


def _bloom_bits(key: bytes) -> tuple[int, int, int, int]:
    """Four independent bit positions of the Bloom filter, cut from a 16-byte digest."""
    v = int.from_bytes(key, "little")
    n = _BLOOM_LOG2_BITS
    return (
        v & _BLOOM_MASK,
        (v >> n) & _BLOOM_MASK,
        (v >> 2 * n) & _BLOOM_MASK,
        v >> 3 * n & _BLOOM_MASK,
    )


def _drop_index(db: sqlite3.Connection, path: Path) -> None:
    db.close()
    path.unlink(missing_ok=True)


def read_records(
    source: Source,
    *,
    vocab_size: int | None = None,
    unique_ids: bool = True,
    max_record_bytes: int | None = None,
) -> Iterator[KDRecord]:
    """Yield the records of a JSONL dataset one at a time; stop at the first invalid row.

    This is the ``strict`` mode; :func:`kd_train.data.quarantine.iter_valid_records` is the
    one that sets bad rows aside and goes on.

    Args:
        source: a path, or a binary file object (read line by line, not closed here).
        vocab_size: when given, every ``teacher_topk`` id must be below it.
        unique_ids: reject a record whose ``id`` appeared on an earlier line.
        max_record_bytes: the most bytes one line may have (default
            :data:`MAX_RECORD_BYTES`).

    Yields:
        Each record, in file order.

    Raises:
        DataValidationError: at the first invalid row (file, line, field and reason), a
            line over the byte limit, or a file with no line.
    """
    name = source_name(source)
    number = 0
    with IdRegistry(name) if unique_ids else contextlib.nullcontext() as seen:
        for number, raw in iter_lines(source, max_record_bytes=max_record_bytes):
            if isinstance(raw, OversizedLine):
                raise raw.error(name, number)
            record = parse_line(raw, name, number, vocab_size=vocab_size)
            if seen is not None:
                seen.add(record.id, number)
            yield record
    if number == 0:
        raise empty_file_error(name)


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
        self._ids.close()
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
