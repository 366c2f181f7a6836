"""The shipped JSON Schema file and the validator agree."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kd_train.data.errors import DataValidationError
from kd_train.data.schema import SCHEMA_VERSION, SPAN_KINDS
from kd_train.data.validate import FIELDS, JSON_SCHEMA_PATH, REQUIRED_FIELDS, parse_line

SCHEMA = json.loads(JSON_SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

VALID: dict[str, Any] = {
    "schema_version": 1,
    "id": "r1",
    "prompt": "Weather?",
    "completion": 'get_weather {"city": "Paris"}',
    "teacher_topk": {"ids": [[5, 9], [7, 3]], "logprobs": [[-0.1, -2.5], [-0.5, -1.0]]},
    "spans": [{"kind": "tool_name", "start": 0, "end": 11}],
    "metadata": {"k": [1, 2]},
}


def copy() -> dict[str, Any]:
    return json.loads(json.dumps(VALID))


def validator_accepts(obj: Any) -> bool:
    try:
        parse_line(json.dumps(obj).encode())
    except DataValidationError:
        return False
    return True


def test_schema_file_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_schema_lists_the_validators_fields() -> None:
    assert tuple(SCHEMA["properties"]) == FIELDS
    assert tuple(SCHEMA["required"]) == REQUIRED_FIELDS
    assert SCHEMA["additionalProperties"] is False


def test_schema_version_and_span_kinds_match() -> None:
    assert SCHEMA["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    span = SCHEMA["properties"]["spans"]["items"]["properties"]
    assert tuple(span["kind"]["enum"]) == SPAN_KINDS


def test_a_valid_record_passes_both() -> None:
    assert VALIDATOR.is_valid(VALID)
    assert validator_accepts(VALID)


def breakages() -> list[tuple[str, dict[str, Any]]]:
    cases = []

    def case(name: str, edit: Any) -> None:
        obj = copy()
        edit(obj)
        cases.append((name, obj))

    case("missing id", lambda o: o.pop("id"))
    case("unknown field", lambda o: o.update(extra=1))
    case("version 2", lambda o: o.update(schema_version=2))
    case("empty completion", lambda o: o.update(completion="", spans=[]))
    case("prompt not a string", lambda o: o.update(prompt=None))
    case("span kind", lambda o: o["spans"][0].update(kind="x"))
    case("negative start", lambda o: o["spans"][0].update(start=-1))
    case("span extra key", lambda o: o["spans"][0].update(label="x"))
    case("positive logprob", lambda o: o["teacher_topk"]["logprobs"][0].__setitem__(0, 0.5))
    case("negative id", lambda o: o["teacher_topk"]["ids"][0].__setitem__(0, -3))
    case("empty topk", lambda o: o.update(teacher_topk={"ids": [], "logprobs": []}))
    case("metadata array", lambda o: o.update(metadata=[]))
    return cases


@pytest.mark.parametrize(("name", "obj"), breakages(), ids=[n for n, _ in breakages()])
def test_what_the_schema_rejects_the_validator_rejects(name: str, obj: dict[str, Any]) -> None:
    assert not VALIDATOR.is_valid(obj), name
    assert not validator_accepts(obj), name


LEAVES = st.none() | st.booleans() | st.integers(-5, 40) | st.floats(-3, 3) | st.text(max_size=4)
PATHS = [
    ("schema_version",),
    ("id",),
    ("completion",),
    ("teacher_topk", "ids", 0, 0),
    ("teacher_topk", "logprobs", 1, 1),
    ("teacher_topk", "ids", 1),
    ("spans", 0, "kind"),
    ("spans", 0, "start"),
    ("spans", 0, "end"),
    ("spans", 0),
    ("metadata",),
]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sampled_from(PATHS), LEAVES | st.lists(LEAVES, max_size=2))
def test_schema_rejection_implies_validator_rejection(path: tuple[Any, ...], value: Any) -> None:
    obj = copy()
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    if not VALIDATOR.is_valid(obj):
        assert not validator_accepts(obj)
