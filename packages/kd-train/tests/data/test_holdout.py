"""Held out by content: token-sequence digests, drop-and-count and refuse-with-ids."""

from __future__ import annotations

import pytest
import torch
from kd_train.data.holdout import (
    HeldOutOverlapError,
    content_key,
    drop_overlap,
    refuse_overlap,
)
from kd_train.data.tokenization import Example


def example(record_id: str, ids: list[int]) -> Example:
    tensor = torch.tensor(ids)
    return Example(record_id, tensor, tensor.clone(), {})


def test_the_key_is_the_token_sequence_not_the_id_or_the_dtype():
    assert content_key(torch.tensor([5, 6], dtype=torch.int32)) == content_key([5, 6])
    assert content_key([5, 6]) != content_key([6, 5])
    assert content_key([5, 6]) != content_key([5, 6, 0])


def test_drop_overlap_removes_and_counts_every_repeat_and_keeps_the_order():
    train = [example("t1", [1, 2]), example("t2", [3])]
    held = [example("h1", [3]), example("h2", [9]), example("h3", [1, 2]), example("h4", [8])]
    kept, report = drop_overlap(train, held)
    assert [e.record_id for e in kept] == ["h2", "h4"]
    assert (report.checked, report.overlapping, report.dropped) == (4, 2, 2)
    assert report.first == [("h1", "t2"), ("h3", "t1")]
    assert report.to_dict()["policy"] == "drop"


def test_refuse_overlap_names_the_count_and_the_first_ids():
    train = [example(f"t{i}", [i, i]) for i in range(6)]
    held = [example(f"copy-of-t{i}", [i, i]) for i in range(5)] + [example("new", [99])]
    with pytest.raises(HeldOutOverlapError) as err:
        refuse_overlap(train, held, source="data.eval e.jsonl")
    message = str(err.value)
    assert message.startswith("data.eval e.jsonl: 5 of 6 eval examples")
    assert "'copy-of-t0' = train 't0'" in message
    assert "'copy-of-t2' = train 't2'" in message
    assert "copy-of-t3" not in message  # three named, all counted


def test_refuse_overlap_returns_a_clean_report_when_nothing_repeats():
    report = refuse_overlap([example("t", [1])], [example("h", [2])])
    assert (report.checked, report.overlapping, report.dropped, report.policy) == (
        1,
        0,
        0,
        "refuse",
    )
