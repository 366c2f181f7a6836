r"""Check one line of a KD dataset and turn it into a :class:`~kd_train.data.schema.KDRecord`.

:func:`parse_line` takes the raw bytes of one line and either returns the record or raises
:class:`~kd_train.data.errors.DataValidationError` naming the file, line and field. The
checks, in order (the first failure is reported):

1. the line is not blank, is UTF-8 and is one JSON object without repeated keys;
2. ``schema_version`` is present and is a version this package reads;
3. no unknown field (free-form data goes under ``metadata``), every required field present;
4. each field has its JSON type (integers written without fraction or exponent), ``id``
   and ``completion`` are non-empty, strings hold no lone UTF-16 surrogate (``"\ud800"``);
5. ``spans``: known kind, ``0 <= start < end <= len(completion)`` in characters (code
   points), no two spans of the same kind overlap (spans of different kinds may);
6. ``teacher_topk``: ``ids`` and ``logprobs`` have the same ``[n][k]`` shape with one ``k``;
   ids are ``>= 0``, distinct within a position and below ``vocab_size`` when it is given;
   log-probs are finite, ``<= 0`` and their probabilities sum to at most ``1 + 1e-3``.

Uniqueness of ``id`` across a file needs state and is checked by the reader, in bounded
memory (:class:`kd_train.data.jsonl.IdRegistry`). The same constraints, minus the
cross-field ones, are in the JSON Schema file shipped next to this module
(:data:`JSON_SCHEMA_PATH`).

>>> from kd_train.data.validate import parse_line
>>> parse_line(b'{"schema_version": 1, "id": "a", "prompt": "2+2=", "completion": "4"}').id
'a'
>>> parse_line(b'{"schema_version": 1, "id": "a", "prompt": 3, "completion": "4"}', "d.jsonl", 9)
Traceback (most recent call last):
...
kd_train.data.errors.DataValidationError: d.jsonl:9: prompt: expected a string, got integer 3
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, NoReturn

from kd_train.data.errors import DataValidationError
from kd_train.data.schema import SCHEMA_VERSION, SPAN_KINDS, KDRecord, Span, TeacherTopK

#: The schema versions this package reads.
SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION,)

#: Fields every record must have.
REQUIRED_FIELDS = ("schema_version", "id", "prompt", "completion")

#: Every field a record may have.
FIELDS = (*REQUIRED_FIELDS, "teacher_topk", "spans", "metadata")

#: The JSON Schema of a record (draft 2020-12), shipped with the package.
JSON_SCHEMA_PATH = Path(__file__).with_name("kd_record.schema.json")

#: Slack allowed on the top-k probability mass, ``Σ exp(logprobs) <= 1 + MASS_TOLERANCE``
#: (teachers round their log-probs, e.g. to fp16).
MASS_TOLERANCE = 1e-3

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _RepeatedKeyError(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKeyError(key)
        out[key] = value
    return out


def json_type(value: object) -> str:
    """Return the JSON name of a parsed value's type (``integer`` and ``number`` apart).

    >>> from kd_train.data.validate import json_type
    >>> [json_type(v) for v in (None, True, 1, 1.5, "a", [], {})]
    ['null', 'boolean', 'integer', 'number', 'string', 'array', 'object']
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _name(key: str) -> str:
    """A field name as it appears in a JSON path: bare when it is a plain identifier."""
    return key if key.isidentifier() and len(key) <= 40 else _show(key)


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, int) else str(value)
    if isinstance(value, int) and not isinstance(value, bool) and len(text) > 24:
        return f"{text[:10]}...({len(text)} digits)"
    return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
    """Raise :class:`DataValidationError` for one line of one file."""

    def __init__(self, path: str, line: int) -> None:
        self.path = path
        self.line = line

    def fail(self, field: str | None, code: str, reason: str) -> NoReturn:
        raise DataValidationError(self.path, self.line, field, code, reason)

    def typed(self, value: object, expected: str, field: str) -> None:
        got = json_type(value)
        if got != expected and not (expected == "number" and got == "integer"):
            article = "an" if expected[0] in "aeiou" else "a"
            self.fail(
                field, "wrong_type", f"expected {article} {expected}, got {got} {_show(value)}"
            )

    def decode(self, raw: bytes) -> dict[str, Any]:
        if not raw.strip():
            self.fail(None, "blank_line", "blank line; expected one JSON object per line")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(
                None,
                "non_utf8",
                f"bytes are not valid UTF-8 ({exc.reason} at byte {exc.start + 1}); "
                "re-encode the file as UTF-8",
            )
        try:
            obj = json.loads(text, object_pairs_hook=_no_repeated_keys)
        except _RepeatedKeyError as exc:
            self.fail(_name(exc.key), "repeated_key", "key appears twice in one object")
        except json.JSONDecodeError as exc:
            self.fail(None, "bad_json", f"invalid JSON: {exc.msg} (column {exc.colno})")
        except RecursionError:
            self.fail(None, "bad_json", "invalid JSON: nested too deeply to parse")
        except ValueError as exc:  # e.g. an integer literal beyond the int-parsing limit
            self.fail(None, "bad_json", f"invalid JSON: {exc}")
        if not isinstance(obj, dict):
            self.fail(None, "not_object", f"expected a JSON object, got {json_type(obj)}")
        if _SURROGATE_ESCAPE.search(raw):
            self.no_lone_surrogates(obj)
        return obj

    def no_lone_surrogates(self, obj: dict[str, Any]) -> None:
        # Iterative walk: metadata may be nested as deep as the JSON parser allows.
        stack: list[tuple[str, object]] = [("", obj)]
        while stack:
            where, value = stack.pop()
            if isinstance(value, dict):
                for key, item in value.items():
                    sub = f"{where}.{key}" if where else key
                    stack.append((sub, key))
                    stack.append((sub, item))
            elif isinstance(value, list):
                stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
            elif isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    self.fail(
                        where,
                        "lone_surrogate",
                        "string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); "
                        "expected valid Unicode text",
                    )

    def record(self, obj: dict[str, Any], vocab_size: int | None) -> KDRecord:
        if "schema_version" not in obj:
            self.fail("schema_version", "missing_field", f"missing; expected {SCHEMA_VERSION}")
        version = obj["schema_version"]
        self.typed(version, "integer", "schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            self.fail(
                "schema_version",
                "unknown_schema_version",
                f"unknown schema version {_show(version)}; this kd-train reads "
                f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}: upgrade kd-train or "
                "convert the file",
            )
        for key in obj:
            if key not in FIELDS:
                self.fail(
                    _name(key),
                    "unknown_field",
                    f"unknown field; expected only {', '.join(FIELDS)} "
                    "(put free-form data under metadata)",
                )
        for key in REQUIRED_FIELDS:
            if key not in obj:
                self.fail(
                    key,
                    "missing_field",
                    "missing; every record needs " + ", ".join(REQUIRED_FIELDS),
                )
        for key in ("id", "prompt", "completion"):
            self.typed(obj[key], "string", key)
        for key in ("id", "completion"):
            if not obj[key]:
                self.fail(key, "empty", "is empty; expected a non-empty string")
        spans = self.spans(obj.get("spans", []), len(obj["completion"]))
        topk = self.topk(obj["teacher_topk"], vocab_size) if "teacher_topk" in obj else None
        metadata = obj.get("metadata", {})
        self.typed(metadata, "object", "metadata")
        return KDRecord(obj["id"], obj["prompt"], obj["completion"], topk, spans, metadata)

    def spans(self, spans: object, length: int) -> list[Span]:
        self.typed(spans, "array", "spans")
        assert isinstance(spans, list)
        out = []
        for i, item in enumerate(spans):
            where = f"spans[{i}]"
            self.typed(item, "object", where)
            for key in item:
                if key not in ("kind", "start", "end"):
                    self.fail(
                        f"{where}.{_name(key)}",
                        "unknown_field",
                        "unknown field; expected kind, start, end",
                    )
            for key in ("kind", "start", "end"):
                if key not in item:
                    self.fail(
                        f"{where}.{key}", "missing_field", "missing; a span needs kind, start, end"
                    )
            kind, start, end = item["kind"], item["start"], item["end"]
            self.typed(kind, "string", f"{where}.kind")
            if kind not in SPAN_KINDS:
                self.fail(
                    f"{where}.kind",
                    "unknown_span_kind",
                    f"unknown kind {_show(kind)}; expected one of {', '.join(SPAN_KINDS)}",
                )
            self.typed(start, "integer", f"{where}.start")
            self.typed(end, "integer", f"{where}.end")
            if not 0 <= start < end <= length:
                self.fail(
                    where,
                    "span_out_of_range",
                    f"[{_show(start)}, {_show(end)}) is outside the completion; expected "
                    f"0 <= start < end <= {length} (characters of the completion)",
                )
            out.append(Span(kind, start, end))
        self.no_overlap(out)
        return out

    def no_overlap(self, spans: list[Span]) -> None:
        order = sorted(range(len(spans)), key=lambda i: (spans[i].kind, spans[i].start))
        for before, after in itertools.pairwise(order):
            a, b = spans[before], spans[after]
            if a.kind == b.kind and b.start < a.end:
                self.fail(
                    f"spans[{after}]",
                    "span_overlap",
                    f"{a.kind} span [{b.start}, {b.end}) overlaps spans[{before}] "
                    f"[{a.start}, {a.end}); spans of one kind must not overlap",
                )

    def topk(self, topk: object, vocab_size: int | None) -> TeacherTopK:
        self.typed(topk, "object", "teacher_topk")
        assert isinstance(topk, dict)
        for key in topk:
            if key not in ("ids", "logprobs"):
                self.fail(
                    f"teacher_topk.{_name(key)}",
                    "unknown_field",
                    "unknown field; expected ids, logprobs",
                )
        for key in ("ids", "logprobs"):
            if key not in topk:
                self.fail(
                    f"teacher_topk.{key}", "missing_field", "missing; expected ids and logprobs"
                )
            self.typed(topk[key], "array", f"teacher_topk.{key}")
        ids, logprobs = topk["ids"], topk["logprobs"]
        if not ids or len(ids) != len(logprobs):
            self.fail(
                "teacher_topk",
                "topk_shape",
                f"ids has {len(ids)} positions and logprobs {len(logprobs)}; "
                "expected the same number, at least 1 (one per completion token)",
            )
        k = len(ids[0]) if isinstance(ids[0], list) else -1
        for t, (row_ids, row_lps) in enumerate(zip(ids, logprobs, strict=True)):
            self.typed(row_ids, "array", f"teacher_topk.ids[{t}]")
            self.typed(row_lps, "array", f"teacher_topk.logprobs[{t}]")
            if len(row_ids) != k or len(row_lps) != k or k == 0:
                self.fail(
                    f"teacher_topk[{t}]",
                    "topk_shape",
                    f"ids has {len(row_ids)} and logprobs {len(row_lps)} entries; expected "
                    f"k = {max(k, 1)} in both at every position (k from position 0)",
                )
            self.topk_ids(row_ids, t, vocab_size)
            self.topk_logprobs(row_lps, t)
        return TeacherTopK(ids, [[float(v) for v in row] for row in logprobs])

    def topk_ids(self, row: list[Any], t: int, vocab_size: int | None) -> None:
        for j, token in enumerate(row):
            where = f"teacher_topk.ids[{t}][{j}]"
            self.typed(token, "integer", where)
            if token < 0 or (vocab_size is not None and token >= vocab_size):
                bound = f"< {vocab_size}" if vocab_size is not None else "a vocabulary id"
                self.fail(
                    where,
                    "id_out_of_vocab",
                    f"token id {_show(token)} is outside the vocabulary; expected 0 <= id {bound}",
                )
        if len(set(row)) != len(row):
            self.fail(
                f"teacher_topk.ids[{t}]",
                "topk_repeated_id",
                "a token id appears twice; expected k distinct ids",
            )

    def topk_logprobs(self, row: list[Any], t: int) -> None:
        mass = 0.0
        for j, value in enumerate(row):
            where = f"teacher_topk.logprobs[{t}][{j}]"
            self.typed(value, "number", where)
            try:
                as_float = float(value)
            except OverflowError:
                as_float = math.inf if value > 0 else -math.inf
            if not math.isfinite(as_float) or as_float > 0:
                self.fail(
                    where,
                    "bad_logprob",
                    f"log-prob {_show(value) if isinstance(value, int) else repr(as_float)}: "
                    "expected a finite number <= 0",
                )
            mass += math.exp(as_float)
        if mass > 1.0 + MASS_TOLERANCE:
            self.fail(
                f"teacher_topk.logprobs[{t}]",
                "topk_mass",
                f"probabilities sum to {mass:.4f}; expected at most 1 (log-probs normalised "
                "over the teacher's vocabulary)",
            )


def parse_line(
    raw: bytes, path: str | Path = "<memory>", line: int = 1, *, vocab_size: int | None = None
) -> KDRecord:
    """Parse and check one line of a dataset; return its record.

    Args:
        raw: the line's bytes, with or without the trailing newline.
        path: the file the line comes from, for the error message.
        line: its 1-based line number, for the error message.
        vocab_size: when given, every ``teacher_topk`` id must be below it.

    Returns:
        The record.

    Raises:
        DataValidationError: the first problem found (see the module docstring for the order).
    """
    checker = _Checker(str(path), line)
    return checker.record(checker.decode(raw), vocab_size)


def check_dict(
    obj: object, path: str | Path = "<memory>", line: int = 1, *, vocab_size: int | None = None
) -> KDRecord:
    """Check an already parsed JSON value (e.g. ``record.to_dict()``); return its record.

    >>> from kd_train.data.schema import KDRecord
    >>> from kd_train.data.validate import check_dict
    >>> rec = KDRecord(id="a", prompt="p", completion="c")
    >>> check_dict(rec.to_dict()) == rec
    True
    """
    checker = _Checker(str(path), line)
    if not isinstance(obj, dict):
        checker.fail(None, "not_object", f"expected a JSON object, got {json_type(obj)}")
    return checker.record(obj, vocab_size)
