"""Fuzzing: whatever the bytes, the reader and validator raise only DataValidationError."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kd_train.data.errors import DataValidationError
from kd_train.data.jsonl import read_records
from kd_train.data.quarantine import ValidationReport, iter_valid_records
from kd_train.data.validate import parse_line

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

VALID: dict[str, Any] = {
    "schema_version": 1,
    "id": "r1",
    "prompt": "Weather?",
    "completion": 'get_weather {"city": "Paris"}',
    "teacher_topk": {"ids": [[5, 9], [7, 3]], "logprobs": [[-0.1, -2.5], [-0.5, -1.0]]},
    "spans": [{"kind": "tool_name", "start": 0, "end": 11}],
    "metadata": {"k": [1, 2]},
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

# Paths into VALID where a mutation is interesting.
PATHS = [
    ("schema_version",),
    ("id",),
    ("prompt",),
    ("completion",),
    ("teacher_topk",),
    ("teacher_topk", "ids"),
    ("teacher_topk", "logprobs"),
    ("teacher_topk", "ids", 0),
    ("teacher_topk", "logprobs", 1),
    ("teacher_topk", "ids", 0, 1),
    ("teacher_topk", "logprobs", 0, 0),
    ("spans",),
    ("spans", 0),
    ("spans", 0, "kind"),
    ("spans", 0, "start"),
    ("spans", 0, "end"),
    ("metadata",),
]


def mutate(path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    obj = json.loads(json.dumps(VALID))
    target = obj
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


def error_of(raw: bytes) -> DataValidationError | None:
    """Parse ``raw``; return the validation error, or None. Any other exception escapes."""
    try:
        parse_line(raw, "fuzz.jsonl", 1, vocab_size=16)
    except DataValidationError as err:
        return err
    return None


def only_our_error(raw: bytes) -> None:
    error = error_of(raw)
    if error is not None:
        assert error.line == 1
        assert str(error).startswith("fuzz.jsonl:1: ")


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_validation_errors(raw: bytes) -> None:
    only_our_error(raw)


@FUZZ
@given(st.sampled_from(PATHS), json_values, st.booleans())
def test_mutated_valid_rows_raise_only_validation_errors(
    path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    only_our_error(json.dumps(mutate(path, value, delete)).encode())


@FUZZ
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=200))
def test_spliced_bytes_in_a_valid_row_raise_only_validation_errors(junk: bytes, where: int) -> None:
    raw = json.dumps(VALID).encode()
    at = where % (len(raw) + 1)
    only_our_error(raw[:at] + junk + raw[at:])


@FUZZ
@given(st.integers(min_value=1, max_value=100_000), st.sampled_from([b"[", b'{"a":']))
def test_deeply_nested_json_is_a_validation_error(depth: int, opener: bytes) -> None:
    only_our_error(opener * depth)


def test_nesting_beyond_the_parser_limit_is_reported_as_bad_json() -> None:
    raw = b'{"schema_version": 1, "metadata": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(DataValidationError) as info:
        parse_line(raw)
    assert info.value.code == "bad_json"
    assert "nested too deeply" in info.value.reason


def test_integer_beyond_the_digit_limit_is_reported_as_bad_json() -> None:
    raw = b'{"schema_version": ' + b"1" * 5000 + b"}"
    with pytest.raises(DataValidationError) as info:
        parse_line(raw)
    assert info.value.code == "bad_json"


lines_strategy = st.lists(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b)
    | st.sampled_from([json.dumps(VALID).encode(), json.dumps({**VALID, "id": "r2"}).encode()]),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(lines_strategy)
def test_reader_over_random_lines_raises_only_validation_errors(lines: list[bytes]) -> None:
    records: list[Any] = []
    error = None
    try:
        for rec in read_records(io.BytesIO(b"".join(line + b"\n" for line in lines))):
            records.append(rec)
    except DataValidationError as err:
        error = err
    if error is None:
        assert len(records) == len(lines)
    else:
        assert error.line == len(records) + 1


@FUZZ
@given(lines_strategy)
def test_quarantine_rows_always_equal_accepted_plus_quarantined(
    tmp_path_factory: Any, lines: list[bytes]
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = ValidationReport(str(path), "quarantine")
    accepted = list(
        iter_valid_records(
            path, mode="quarantine", quarantine_path=directory / "q.jsonl", report=report
        )
    )
    quarantined = (directory / "q.jsonl").read_bytes().splitlines()
    assert report.rows == len(lines)
    assert report.rows == report.accepted + report.quarantined
    assert (len(accepted), len(quarantined)) == (report.accepted, report.quarantined)
