"""The generation output: prompts in, KD records appended one durable line at a time.

The output file is the resumption point. Each record is written as one line with one
``write`` then flushed and ``fsync``-ed, so after a kill (even SIGKILL) the file holds
complete lines plus at most one partial last line. :func:`recover_output` truncates that
partial line and returns the ids already written, so a rerun writes each remaining
prompt exactly once.

>>> import tempfile, pathlib
>>> from kd_train.data.schema import KDRecord
>>> from kd_train.generate.output import RecordAppender, recover_output
>>> out = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
>>> with RecordAppender(out) as appender:
...     appender.append(KDRecord(id="a", prompt="p", completion="c"))
>>> with out.open("a") as f:
...     _ = f.write('{"id": "b", "prom')  # a write cut short by a kill
>>> sorted(recover_output(out)), len(out.read_text().splitlines())
(['a'], 1)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kd_train.atomic import fsync_dir
from kd_train.data.jsonl import OversizedLine, iter_lines
from kd_train.data.schema import KDRecord
from kd_train.errors import KDTrainError


@dataclass(frozen=True)
class Prompt:
    """One row of a prompts file: a unique ``id`` and the ``prompt`` text."""

    id: str
    prompt: str


def read_prompts(path: str | Path) -> list[Prompt]:
    """Read a JSONL prompts file (objects with string ``id`` and ``prompt``; ids unique).

    Raises:
        kd_train.errors.KDTrainError: the file is missing or holds no prompt, or a line is
            not such an object, not UTF-8 or over the per-record byte limit (the message
            names file and line).
    """
    source = Path(path)
    if not source.is_file():
        raise KDTrainError(f"prompts file {source} does not exist")
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    with source.open("rb") as handle:  # bounded lines (MAX_RECORD_BYTES), bytes checked
        for number, raw in iter_lines(handle):
            if isinstance(raw, OversizedLine):
                raise raw.error(str(source), number)
            if not raw.strip():
                continue
            where = f"{source}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise KDTrainError(
                    f"{where}: bytes are not valid UTF-8 ({exc.reason} at byte {exc.start + 1}); "
                    "re-encode the file as UTF-8"
                ) from None
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise KDTrainError(f"{where}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise KDTrainError(f"{where}: expected a JSON object with 'id' and 'prompt'")
            for name in ("id", "prompt"):
                if not isinstance(row.get(name), str) or not row[name]:
                    raise KDTrainError(f"{where}: field {name!r} must be a non-empty string")
            if row["id"] in seen:
                raise KDTrainError(
                    f"{where}: id {row['id']!r} already used on line {seen[row['id']]}; "
                    "ids must be unique"
                )
            seen[row["id"]] = number
            prompts.append(Prompt(row["id"], row["prompt"]))
    if not prompts:
        raise KDTrainError(f"prompts file {source} holds no prompt; give one JSON object a line")
    return prompts


def written_ids(path: str | Path) -> tuple[set[str], int]:
    """Scan an output without changing it: the ids of its complete lines, and their length.

    Lines are read one at a time (bounded by the per-record byte limit); a last line
    without its newline is a write cut short by a kill and is not looked at.

    Returns:
        ``(ids, keep)``: the ids written, and the byte length of the complete lines
        (``(set(), 0)`` when ``path`` does not exist).

    Raises:
        kd_train.errors.KDTrainError: ``path`` is not a file, or a complete line is not a
            UTF-8 JSON object with an ``id`` (the file was written by something else).
    """
    target = Path(path)
    if not target.exists():
        return set(), 0
    if not target.is_file():
        raise KDTrainError(f"{target} is not a file; give the output JSONL file")
    ids: set[str] = set()
    keep = 0
    with target.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        for number, raw in iter_lines(handle):
            end = handle.tell()
            if end == size and not _ends_with_newline(handle, size):
                break  # the partial last line
            keep = end
            try:
                if isinstance(raw, OversizedLine):
                    raise ValueError("over the per-record byte limit")
                row: Any = json.loads(raw.decode("utf-8"))
                ids.add(str(row["id"]))
            except (ValueError, KeyError, TypeError):
                raise KDTrainError(
                    f"{target}:{number}: not a KD record line; the output file was written "
                    "by something else: pass another --out"
                ) from None
            handle.seek(end)
    return ids, keep


def _ends_with_newline(handle: IO[bytes], size: int) -> bool:
    handle.seek(size - 1)
    return handle.read(1) == b"\n"


def recover_output(path: str | Path) -> set[str]:
    """Truncate ``path`` to its last complete line and return the ids written (``set()`` if new).

    The file is checked (:func:`written_ids`) before anything is cut, so a file written
    by something else is refused unchanged.

    Raises:
        kd_train.errors.KDTrainError: a complete line is not a JSON object with an ``id``.
    """
    ids, keep = written_ids(path)
    target = Path(path)
    if target.exists() and target.stat().st_size != keep:
        with target.open("rb+") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return ids


class RecordAppender:
    """Append KD records to a JSONL file, one ``fsync``-ed line each."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._handle: IO[str] = self.path.open("a", encoding="utf-8")
        if not existed:
            fsync_dir(self.path.parent)

    def append(self, record: KDRecord) -> None:
        """Write ``record`` as one line and make it durable before returning."""
        line = json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"))
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> RecordAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
