r"""Validate a whole dataset file in ``strict`` or ``quarantine`` mode and report on it.

``strict``
    Stop at the first invalid row with its :class:`~kd_train.data.errors.DataValidationError`.
``quarantine``
    Yield the valid rows and set every rejected row aside, verbatim, in a quarantine file.
    No row is ever dropped silently: ``rows == accepted + quarantined`` always, blank lines
    included (a blank line is a rejected row with code ``blank_line``).

The quarantine file is JSONL, one object per rejected row, in input order::

    {"source": "train.jsonl", "line": 7, "field": "spans[0]", "code": "span_out_of_range",
     "reason": "[3, 99) is outside the completion; ...", "raw": "<the line as text>",
     "raw_base64": "<the line's exact bytes, base64>"}

``raw_base64`` holds the original bytes of the line (without its ``\n``) exactly, even when
they are not UTF-8; ``raw`` is the same line as text, or ``null`` when it is not UTF-8.
A line over the per-record byte limit (code ``record_too_large``) is never held in memory,
so both are ``null`` for it.
``field`` is ``null`` when the whole line is at fault. The file is written atomically and
appears when the iteration finishes; in quarantine mode it is always written, empty when
nothing was rejected.

>>> import tempfile, pathlib
>>> from kd_train.data.quarantine import validate_file
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "in.jsonl").write_bytes(
...     b'{"schema_version": 1, "id": "a", "prompt": "", "completion": "x"}\n'
...     b'not json\n'
... )
>>> report = validate_file(d / "in.jsonl", mode="quarantine", quarantine_path=d / "q.jsonl")
>>> (report.rows, report.accepted, report.quarantined, dict(report.by_code))
(2, 1, 1, {'bad_json': 1})
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from kd_train.atomic import atomic_open
from kd_train.cliutil import progress_bar
from kd_train.data.errors import DataValidationError
from kd_train.data.jsonl import IdRegistry, OversizedLine, empty_file_error, iter_lines
from kd_train.data.schema import KDRecord
from kd_train.data.validate import parse_line

logger = logging.getLogger(__name__)

#: How a dataset file is validated.
Mode = Literal["strict", "quarantine"]

#: The modes, in the order the command line lists them.
MODES: tuple[Mode, ...] = ("strict", "quarantine")

#: How many rejection messages a report keeps to show (all are counted).
MAX_EXAMPLES = 5


@dataclass
class ValidationReport:
    """What validating one file found. ``rows == accepted + quarantined`` when it finishes.

    Attributes:
        path: the validated file.
        mode: ``"strict"`` or ``"quarantine"``.
        rows: lines read (blank lines included).
        accepted: valid rows.
        quarantined: rejected rows (written to the quarantine file in quarantine mode).
        by_code: rejected rows per
            :attr:`~kd_train.data.errors.DataValidationError.code`.
        examples: the first :data:`MAX_EXAMPLES` rejection messages.
        quarantine_path: where rejected rows went, or ``None`` in strict mode.
    """

    path: str
    mode: Mode
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0
    by_code: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    quarantine_path: str | None = None

    @property
    def blank_lines(self) -> int:
        """How many rejected rows were blank lines."""
        return self.by_code.get("blank_line", 0)

    def reject(self, error: DataValidationError) -> None:
        """Count ``error``'s row as rejected."""
        self.quarantined += 1
        self.by_code[error.code] = self.by_code.get(error.code, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(error))

    def summary(self) -> str:
        """Return a short human summary (counts, reasons, where the rejects went).

        >>> from kd_train.data.quarantine import ValidationReport
        >>> print(ValidationReport("d.jsonl", "strict", rows=3, accepted=3).summary())
        d.jsonl: 3 rows: 3 accepted, 0 quarantined
        """
        text = f"{self.path}: {self.rows} rows: {self.accepted} accepted, "
        text += f"{self.quarantined} quarantined"
        if self.by_code:
            reasons = ", ".join(f"{code} {n}" for code, n in sorted(self.by_code.items()))
            text += f" ({reasons})"
        if self.quarantine_path is not None:
            text += f"\nrejected rows: {self.quarantine_path}"
        for example in self.examples:
            text += f"\n  {example}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "path": self.path,
            "mode": self.mode,
            "rows": self.rows,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "blank_lines": self.blank_lines,
            "by_code": dict(sorted(self.by_code.items())),
            "quarantine_path": self.quarantine_path,
        }


def quarantine_line(error: DataValidationError, raw: bytes | None) -> bytes:
    r"""Return the quarantine-file line for a rejected row (JSON + ``\n``).

    >>> import base64, json
    >>> from kd_train.data.errors import DataValidationError
    >>> from kd_train.data.quarantine import quarantine_line
    >>> err = DataValidationError("d.jsonl", 2, None, "non_utf8", "bytes are not UTF-8")
    >>> entry = json.loads(quarantine_line(err, b"\xff{"))
    >>> (entry["line"], entry["raw"], base64.b64decode(entry["raw_base64"]))
    (2, None, b'\xff{')
    """
    text: str | None = None
    if raw is not None:
        with contextlib.suppress(UnicodeDecodeError):
            text = raw.decode("utf-8")
    entry = {
        "source": error.path,
        "line": error.line,
        "field": error.field,
        "code": error.code,
        "reason": error.reason,
        "raw": text,
        "raw_base64": None if raw is None else base64.b64encode(raw).decode("ascii"),
    }
    # ensure_ascii: a raw line with lone surrogates must still be written as valid UTF-8.
    return json.dumps(entry, ensure_ascii=True).encode("ascii") + b"\n"


@contextlib.contextmanager
def _discard() -> Iterator[IO[bytes]]:
    # Strict mode writes no quarantine file; rejected rows raise before reaching it.
    with open(os.devnull, "wb") as sink:
        yield sink


def default_quarantine_path(path: str | Path) -> Path:
    """Return ``<stem>.quarantine.jsonl`` next to ``path``.

    >>> from kd_train.data.quarantine import default_quarantine_path
    >>> default_quarantine_path("runs/train.jsonl").as_posix()
    'runs/train.quarantine.jsonl'
    """
    source = Path(path)
    return source.with_name(f"{source.stem}.quarantine.jsonl")


def iter_valid_records(
    path: str | Path,
    *,
    mode: Mode = "strict",
    quarantine_path: str | Path | None = None,
    vocab_size: int | None = None,
    report: ValidationReport | None = None,
    progress: bool = False,
    max_record_bytes: int | None = None,
) -> Iterator[KDRecord]:
    """Yield the valid records of ``path`` one at a time, in ``strict`` or ``quarantine`` mode.

    The first occurrence of an id is kept; a later row with the same id is rejected.

    Args:
        path: the JSONL dataset.
        mode: ``"strict"`` raises at the first invalid row; ``"quarantine"`` sets it aside.
        quarantine_path: where rejected rows go; required in quarantine mode.
        vocab_size: when given, every ``teacher_topk`` id must be below it.
        report: filled in as rows are read (pass one to read the counts afterwards).
        progress: show a progress bar (bytes read) on standard error.
        max_record_bytes: the most bytes one line may have (default
            :data:`kd_train.data.jsonl.MAX_RECORD_BYTES`); a longer one is a rejected row.

    Yields:
        Each valid record, in file order.

    Raises:
        DataValidationError: in strict mode, at the first invalid row; in both modes, for
            a file with no line at all (code ``empty_file``).
        ValueError: ``mode`` is unknown, or quarantine mode has no ``quarantine_path``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "quarantine" and quarantine_path is None:
        raise ValueError("quarantine mode needs a quarantine_path for the rejected rows")
    name = str(path)
    report = report if report is not None else ValidationReport(name, mode)
    if mode == "strict":
        quarantine_path = None
    report.quarantine_path = None if quarantine_path is None else str(quarantine_path)
    with (
        IdRegistry(name) as seen,
        (
            atomic_open(quarantine_path, "wb") if quarantine_path is not None else _discard()
        ) as rejects,
        progress_bar(
            total=os.path.getsize(path),
            unit="B",
            unit_scale=True,
            enabled=progress,
            desc=name,
        ) as bar,
    ):
        for number, raw in iter_lines(path, max_record_bytes=max_record_bytes):
            report.rows += 1
            kept = raw if isinstance(raw, bytes) else None
            bar.update((len(raw) if isinstance(raw, bytes) else raw.size) + 1)
            try:
                if isinstance(raw, OversizedLine):
                    raise raw.error(name, number)
                record = parse_line(raw, name, number, vocab_size=vocab_size)
                seen.add(record.id, number)
            except DataValidationError as error:
                report.reject(error)
                if mode == "strict":
                    raise
                rejects.write(quarantine_line(error, kept))
                continue
            report.accepted += 1
            yield record
        if report.rows == 0:
            raise empty_file_error(name)
    if report.quarantined:
        logger.warning("%s", report.summary().splitlines()[0])


def validate_file(
    path: str | Path,
    *,
    mode: Mode = "strict",
    quarantine_path: str | Path | None = None,
    vocab_size: int | None = None,
    progress: bool = False,
    max_record_bytes: int | None = None,
) -> ValidationReport:
    """Validate every row of ``path``; return the report (see :func:`iter_valid_records`).

    Raises:
        DataValidationError: in strict mode, at the first invalid row; for an empty file.
    """
    report = ValidationReport(str(path), mode)
    for _ in iter_valid_records(
        path,
        mode=mode,
        quarantine_path=quarantine_path,
        vocab_size=vocab_size,
        report=report,
        progress=progress,
        max_record_bytes=max_record_bytes,
    ):
        pass
    return report
