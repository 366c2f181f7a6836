"""load_splits: every held-out split is checked against training by token sequence."""

from __future__ import annotations

from dataclasses import replace

import pytest
from kd_train.data.holdout import HeldOutOverlapError, content_key
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.trainer.components import load_examples, load_splits
from kd_train.trainer.config import DataConfig
from transformers import AutoTokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def keys(examples):
    return {content_key(e.input_ids) for e in examples}


def test_toy_data_eval_fraction_holds_out_by_content(tmp_path, tokenizer):
    # The example: 200 toy rows, eval_fraction 0.1 (15 of 20 repeated training rows).
    path = write_jsonl(tmp_path / "train.jsonl", tool_call_records(200))
    splits = load_splits(DataConfig(train=str(path), eval_fraction=0.1), tokenizer)
    assert len(splits.eval) == 20
    assert not keys(splits.train) & keys(splits.eval)
    assert (splits.overlap.checked, splits.overlap.dropped) == (20, 0)


def test_eval_fraction_drops_rows_that_repeat_training_ones_and_counts_them(
    tmp_path, tokenizer, caplog
):
    rows = tool_call_records(16)
    # The last 4 rows are held out; two of them copy training rows under new ids.
    rows[12] = replace(rows[3], id="copy-a")
    rows[14] = replace(rows[5], id="copy-b")
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    splits = load_splits(DataConfig(train=str(path), eval_fraction=0.25), tokenizer)
    assert [e.record_id for e in splits.eval] == [rows[13].id, rows[15].id]
    assert splits.overlap.to_dict() == {
        "split": "eval",
        "policy": "drop",
        "checked": 4,
        "overlapping": 2,
        "dropped": 2,
        "first": [["copy-a", rows[3].id], ["copy-b", rows[5].id]],
    }
    assert "2 of 4 eval examples have the token sequence" in caplog.text
    assert "dropped them from eval" in caplog.text
    train, held = load_examples(DataConfig(train=str(path), eval_fraction=0.25), tokenizer)
    assert [e.record_id for e in held] == [e.record_id for e in splits.eval]
    assert len(train) == 12


def test_a_separate_eval_file_that_repeats_training_rows_is_refused(tmp_path, tokenizer):
    train = tool_call_records(12)
    train_file = write_jsonl(tmp_path / "train.jsonl", train)
    held = [replace(train[7], id="e0"), *tool_call_records(14)[12:], replace(train[2], id="e3")]
    eval_file = write_jsonl(tmp_path / "eval.jsonl", held)
    config = DataConfig(train=str(train_file), eval=str(eval_file))
    with pytest.raises(
        HeldOutOverlapError, match=r"2 of 4 eval examples .*'e0' = train 'tool-0-7'"
    ):
        load_splits(config, tokenizer)


def test_a_disjoint_eval_file_passes_with_a_clean_report(tmp_path, tokenizer):
    rows = tool_call_records(14)
    train_file = write_jsonl(tmp_path / "train.jsonl", rows[:12])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", rows[12:])
    splits = load_splits(DataConfig(train=str(train_file), eval=str(eval_file)), tokenizer)
    assert len(splits.eval) == 2
    assert (splits.overlap.policy, splits.overlap.overlapping) == ("refuse", 0)


def test_an_empty_train_file_is_refused(tmp_path, tokenizer):
    (tmp_path / "train.jsonl").write_bytes(b"")
    with pytest.raises(Exception, match=r"train\.jsonl:1: the file is empty"):
        load_splits(DataConfig(train=str(tmp_path / "train.jsonl")), tokenizer)
