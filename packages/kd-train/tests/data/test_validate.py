"""Each kind of invalid row is rejected with file:line: field: and what was expected."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kd_train.data.errors import DataValidationError
from kd_train.data.schema import KDRecord, Span, TeacherTopK
from kd_train.data.validate import check_dict, json_type, parse_line


def valid() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "id": "r1",
        "prompt": "Weather in Paris?",
        "completion": 'get_weather {"city": "Paris"}',
        "teacher_topk": {"ids": [[5, 9], [7, 3]], "logprobs": [[-0.1, -2.5], [-0.5, -1.0]]},
        "spans": [
            {"kind": "tool_name", "start": 0, "end": 11},
            {"kind": "json_args", "start": 12, "end": 29},
        ],
        "metadata": {"source": "unit"},
    }


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def reject(raw: bytes, vocab_size: int | None = None) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        parse_line(raw, "data/train.jsonl", 42, vocab_size=vocab_size)
    return info.value


def test_valid_row_becomes_the_record_it_describes() -> None:
    record = parse_line(line(valid()))
    assert record == KDRecord(
        id="r1",
        prompt="Weather in Paris?",
        completion='get_weather {"city": "Paris"}',
        teacher_topk=TeacherTopK([[5, 9], [7, 3]], [[-0.1, -2.5], [-0.5, -1.0]]),
        spans=[Span("tool_name", 0, 11), Span("json_args", 12, 29)],
        metadata={"source": "unit"},
    )


def test_record_to_dict_round_trips_through_the_validator() -> None:
    record = parse_line(line(valid()))
    assert check_dict(record.to_dict()) == record


def test_message_names_file_line_and_field() -> None:
    obj = valid()
    obj["spans"][1]["end"] = 99
    err = reject(line(obj))
    assert str(err).startswith("data/train.jsonl:42: spans[1]: ")
    assert (err.path, err.line, err.field, err.code) == (
        "data/train.jsonl",
        42,
        "spans[1]",
        "span_out_of_range",
    )
    assert "expected 0 <= start < end <= 29" in err.reason


def test_bad_json_is_reported_with_its_column() -> None:
    err = reject(b'{"id": "a",, }')
    assert err.code == "bad_json"
    assert err.field is None
    assert str(err).startswith("data/train.jsonl:42: invalid JSON: ")
    assert "column 12" in err.reason


def test_blank_line_is_rejected() -> None:
    assert reject(b"   ").code == "blank_line"


def test_non_utf8_bytes_are_rejected_with_their_position() -> None:
    err = reject(b'{"id": "\xff"}')
    assert err.code == "non_utf8"
    assert "byte 9" in err.reason


def test_json_that_is_not_an_object_is_rejected() -> None:
    err = reject(b"[1, 2]")
    assert (err.code, err.reason) == ("not_object", "expected a JSON object, got array")


def test_repeated_key_is_rejected() -> None:
    err = reject(b'{"schema_version": 1, "id": "a", "id": "b"}')
    assert (err.code, err.field) == ("repeated_key", "id")


@pytest.mark.parametrize("field", ["id", "prompt", "completion"])
def test_missing_required_field_is_named(field: str) -> None:
    obj = valid()
    del obj[field]
    err = reject(line(obj))
    assert (err.code, err.field) == ("missing_field", field)


def test_missing_schema_version_is_reported_first() -> None:
    err = reject(b'{"id": 3}')
    assert (err.code, err.field) == ("missing_field", "schema_version")


def test_unknown_schema_version_says_which_versions_are_read() -> None:
    obj = valid()
    obj["schema_version"] = 2
    err = reject(line(obj))
    assert err.code == "unknown_schema_version"
    assert "this kd-train reads 1" in err.reason


def test_schema_version_written_as_float_is_a_wrong_type() -> None:
    obj = valid()
    obj["schema_version"] = 1.0
    assert reject(line(obj)).code == "wrong_type"


def test_unknown_top_level_field_points_to_metadata() -> None:
    obj = valid()
    obj["spanz"] = []
    err = reject(line(obj))
    assert (err.code, err.field) == ("unknown_field", "spanz")
    assert "metadata" in err.reason


def test_wrong_type_says_expected_and_got() -> None:
    obj = valid()
    obj["completion"] = ["a"]
    err = reject(line(obj))
    assert str(err) == 'data/train.jsonl:42: completion: expected a string, got array ["a"]'


def test_boolean_is_not_an_integer() -> None:
    obj = valid()
    obj["spans"][0]["start"] = True
    err = reject(line(obj))
    assert (err.code, err.field) == ("wrong_type", "spans[0].start")


@pytest.mark.parametrize("field", ["id", "completion"])
def test_empty_id_or_completion_is_rejected(field: str) -> None:
    obj = valid()
    obj[field] = ""
    obj.pop("spans")
    obj.pop("teacher_topk")
    assert (reject(line(obj)).code, reject(line(obj)).field) == ("empty", field)


def test_lone_surrogate_is_rejected_with_its_path() -> None:
    raw = line(valid()).replace(b'"unit"', b'"\\ud800x"')
    err = reject(raw)
    assert (err.code, err.field) == ("lone_surrogate", "metadata.source")


def test_surrogate_pair_escape_is_valid_text() -> None:
    raw = line(valid()).replace(b'"unit"', b'"\\ud83d\\ude00"')
    assert parse_line(raw).metadata == {"source": "\U0001f600"}


def test_unknown_span_kind_lists_the_kinds() -> None:
    obj = valid()
    obj["spans"][0]["kind"] = "tool"
    err = reject(line(obj))
    assert (err.code, err.field) == ("unknown_span_kind", "spans[0].kind")
    assert "tool_name, json_args, integration, code_mode" in err.reason


def test_span_field_missing_is_named() -> None:
    obj = valid()
    del obj["spans"][1]["start"]
    assert reject(line(obj)).field == "spans[1].start"


def test_empty_span_is_out_of_range() -> None:
    obj = valid()
    obj["spans"][0]["end"] = 0
    assert reject(line(obj)).code == "span_out_of_range"


def test_span_ending_at_the_last_character_is_valid() -> None:
    obj = valid()
    obj["spans"] = [{"kind": "integration", "start": 0, "end": len(obj["completion"])}]
    assert parse_line(line(obj)).spans == [Span("integration", 0, 29)]


def test_span_length_counts_characters_not_bytes() -> None:
    obj = valid()
    obj["completion"] = "héllo 🙂"
    obj.pop("teacher_topk")
    obj["spans"] = [{"kind": "integration", "start": 6, "end": 7}]
    assert parse_line(line(obj)).spans == [Span("integration", 6, 7)]


def test_overlapping_spans_of_one_kind_are_rejected() -> None:
    obj = valid()
    obj["spans"] = [
        {"kind": "json_args", "start": 12, "end": 20},
        {"kind": "tool_name", "start": 0, "end": 11},
        {"kind": "json_args", "start": 19, "end": 29},
    ]
    err = reject(line(obj))
    assert (err.code, err.field) == ("span_overlap", "spans[2]")
    assert "overlaps spans[0] [12, 20)" in err.reason


def test_adjacent_spans_and_overlaps_across_kinds_are_valid() -> None:
    obj = valid()
    obj["spans"] = [
        {"kind": "json_args", "start": 0, "end": 5},
        {"kind": "json_args", "start": 5, "end": 9},
        {"kind": "integration", "start": 0, "end": 29},
    ]
    assert len(parse_line(line(obj)).spans) == 3


def test_positive_logprob_is_rejected() -> None:
    obj = valid()
    obj["teacher_topk"]["logprobs"][1][0] = 0.5
    err = reject(line(obj))
    assert str(err) == (
        "data/train.jsonl:42: teacher_topk.logprobs[1][0]: "
        "log-prob 0.5: expected a finite number <= 0"
    )


@pytest.mark.parametrize("token", [b"NaN", b"-Infinity", b"-1e999"])
def test_non_finite_logprob_is_rejected(token: bytes) -> None:
    raw = line(valid()).replace(b"-2.5", token)
    err = reject(raw)
    assert (err.code, err.field) == ("bad_logprob", "teacher_topk.logprobs[0][1]")


def test_huge_integer_logprob_is_rejected_without_overflow() -> None:
    raw = line(valid()).replace(b"-2.5", b"-" + b"9" * 400)
    assert reject(raw).code == "bad_logprob"


def test_topk_mass_above_one_is_rejected() -> None:
    obj = valid()
    obj["teacher_topk"]["logprobs"][0] = [-0.1, -0.2]
    assert (reject(line(obj)).code, reject(line(obj)).field) == (
        "topk_mass",
        "teacher_topk.logprobs[0]",
    )


def test_topk_id_outside_vocabulary_is_rejected_when_vocab_size_given() -> None:
    raw = line(valid())
    assert parse_line(raw).teacher_topk is not None
    err = reject(raw, vocab_size=8)
    assert (err.code, err.field) == ("id_out_of_vocab", "teacher_topk.ids[0][1]")
    assert "expected 0 <= id < 8" in err.reason


def test_negative_topk_id_is_rejected_without_vocab_size() -> None:
    obj = valid()
    obj["teacher_topk"]["ids"][0][0] = -1
    assert reject(line(obj)).code == "id_out_of_vocab"


def test_repeated_topk_id_in_one_position_is_rejected() -> None:
    obj = valid()
    obj["teacher_topk"]["ids"][1] = [7, 7]
    assert (reject(line(obj)).code, reject(line(obj)).field) == (
        "topk_repeated_id",
        "teacher_topk.ids[1]",
    )


def test_topk_position_count_mismatch_is_rejected() -> None:
    obj = valid()
    obj["teacher_topk"]["logprobs"].pop()
    err = reject(line(obj))
    assert (err.code, err.field) == ("topk_shape", "teacher_topk")
    assert "ids has 2 positions and logprobs 1" in err.reason


def test_topk_k_mismatch_within_a_position_is_rejected() -> None:
    obj = valid()
    obj["teacher_topk"]["logprobs"][1] = [-0.5]
    err = reject(line(obj))
    assert (err.code, err.field) == ("topk_shape", "teacher_topk[1]")


def test_topk_k_changing_between_positions_is_rejected() -> None:
    obj = valid()
    obj["teacher_topk"] = {"ids": [[5, 9], [7]], "logprobs": [[-0.1, -2.5], [-0.5]]}
    assert reject(line(obj)).field == "teacher_topk[1]"


def test_topk_unknown_key_is_rejected() -> None:
    obj = valid()
    obj["teacher_topk"]["tail"] = [0.0, 0.0]
    assert reject(line(obj)).field == "teacher_topk.tail"


def test_metadata_must_be_an_object() -> None:
    obj = valid()
    obj["metadata"] = "x"
    assert (reject(line(obj)).code, reject(line(obj)).field) == ("wrong_type", "metadata")


def test_check_dict_rejects_a_non_object() -> None:
    with pytest.raises(DataValidationError, match="expected a JSON object, got string"):
        check_dict("x")


def test_json_type_names() -> None:
    assert [json_type(v) for v in (None, False, 0, 0.0, "", [], {})] == [
        "null",
        "boolean",
        "integer",
        "number",
        "string",
        "array",
        "object",
    ]


def test_error_survives_pickling_with_its_attributes() -> None:
    import pickle

    err = reject(b"{")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.line, copy.field, copy.code, str(copy)) == (
        err.path,
        err.line,
        err.field,
        err.code,
        str(err),
    )
