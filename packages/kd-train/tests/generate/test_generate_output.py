import json

import pytest
from kd_train.data.schema import KDRecord
from kd_train.errors import KDTrainError
from kd_train.generate.output import (
    Prompt,
    RecordAppender,
    read_prompts,
    recover_output,
    written_ids,
)


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_prompts_are_read_in_file_order(tmp_path):
    path = write(
        tmp_path / "p.jsonl", ['{"id": "b", "prompt": "x"}', "", '{"id": "a", "prompt": "y"}']
    )
    assert read_prompts(path) == [Prompt("b", "x"), Prompt("a", "y")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "p.jsonl:2: not valid JSON"),
        ("[1]", "p.jsonl:2: expected a JSON object"),
        ('{"id": "z"}', "p.jsonl:2: field 'prompt'"),
        ('{"id": "a", "prompt": "again"}', "p.jsonl:2: id 'a' already used on line 1"),
    ],
)
def test_bad_prompt_line_is_named_by_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", ['{"id": "a", "prompt": "x"}', line])
    with pytest.raises(KDTrainError, match=message):
        read_prompts(path)


def test_missing_prompts_file_is_an_input_error(tmp_path):
    with pytest.raises(KDTrainError, match="does not exist"):
        read_prompts(tmp_path / "nope.jsonl")


def test_recover_truncates_partial_last_line_and_returns_ids(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "pro')
    assert recover_output(path) == {"a", "b"}
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_recover_of_missing_output_is_empty(tmp_path):
    assert recover_output(tmp_path / "none.jsonl") == set()


def test_recover_refuses_a_foreign_file(tmp_path):
    path = write(tmp_path / "out.jsonl", ['{"id": "a"}', "not json"])
    with pytest.raises(KDTrainError, match=r"out\.jsonl:2: not a KD record line"):
        recover_output(path)


def test_a_foreign_file_is_refused_unchanged_even_its_partial_last_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"from": "another run"}\nno newline at the end')
    with pytest.raises(KDTrainError, match=r"out\.jsonl:1: not a KD record line"):
        recover_output(path)
    assert path.read_bytes() == b'{"from": "another run"}\nno newline at the end'


def test_written_ids_reads_without_changing_the_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "pro')
    assert written_ids(path) == ({"a", "b"}, 24)
    assert path.read_bytes().endswith(b'"pro')
    assert written_ids(tmp_path / "none.jsonl") == (set(), 0)


@pytest.mark.parametrize("content", [b'{"id": "a"}\n\xff\xfe\n', b'{"id": "a"}\n\n'])
def test_a_line_that_is_not_utf8_json_is_named(tmp_path, content):
    path = tmp_path / "out.jsonl"
    path.write_bytes(content)
    with pytest.raises(KDTrainError, match=r"out\.jsonl:2: not a KD record line"):
        written_ids(path)


def test_appender_writes_one_complete_line_per_record(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    with RecordAppender(path) as out:
        out.append(KDRecord(id="a", prompt="p", completion="é"))
        out.append(KDRecord(id="b", prompt="p", completion="c"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["completion"]) for r in rows] == [("a", "é"), ("b", "c")]
