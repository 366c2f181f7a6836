import pytest
from kd_eval.errors import EvalDataError
from kd_eval.loading.data import read_eval_set
from kd_train.data.schema import KDRecord


def test_reads_every_record_in_file_order(write_set):
    records = [KDRecord(id=str(i), prompt="p", completion=str(i)) for i in range(3)]
    assert read_eval_set(write_set(records)) == records


def test_missing_file_is_named(tmp_path):
    with pytest.raises(EvalDataError, match=r"missing\.jsonl does not exist"):
        read_eval_set(tmp_path / "missing.jsonl")


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(EvalDataError, match="is empty"):
        read_eval_set(path)


def test_malformed_row_names_file_and_line(write_set):
    path = write_set([KDRecord(id="a", prompt="p", completion="c")])
    with path.open("a") as handle:
        handle.write('{"schema_version": 1, "id": "b", "prompt": 3, "completion": "c"}\n')
    with pytest.raises(EvalDataError, match=rf"{path}:2: prompt"):
        read_eval_set(path)
