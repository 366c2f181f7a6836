"""The ``records`` teacher: stored top-k at the label positions, shifted like the labels."""

from __future__ import annotations

import math

import pytest
import torch
from kd_train.data import collate
from kd_train.data.schema import KDRecord, TeacherTopK
from kd_train.data.tokenization import IGNORE_INDEX, TokenizeConfig, encode_record
from kd_train.errors import KDTrainError
from kd_train.teachers import RecordsTeacher
from kd_train.testing import train_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tiny_tokenizer()


def example(tok, rid: str, completion: str, with_topk: bool = True):
    n = len(tok(completion, add_special_tokens=False)["input_ids"])
    topk = TeacherTopK([[t + 3, t + 4] for t in range(n)], [[-0.1, -3.0]] * n)
    record = KDRecord(rid, "Q:", completion, teacher_topk=topk if with_topk else None)
    return encode_record(record, tok, TokenizeConfig(max_length=64))


def test_stored_rows_shift_like_the_labels(tok):
    batch = collate([example(tok, "a", " yes indeed"), example(tok, "b", " no")], 0)
    out = RecordsTeacher(len(tok))(batch)
    assert out.aligned == "labels"
    view = out.next_token()
    assert batch.teacher_ids is not None
    assert batch.teacher_mask is not None
    assert view.ids is not None
    assert view.mask is not None
    assert torch.equal(view.mask, batch.teacher_mask[:, 1:])
    assert torch.equal(view.ids[view.mask], batch.teacher_ids[:, 1:][view.mask])
    # every position with a teacher row predicts a real completion label
    assert (batch.labels[:, 1:][view.mask] != IGNORE_INDEX).all()


def test_positions_without_a_row_hold_distinct_placeholder_ids(tok):
    out = RecordsTeacher(len(tok))(collate([example(tok, "a", " yes indeed")], 0))
    assert out.mask is not None
    assert out.ids is not None
    assert out.logprobs is not None
    empty = ~out.mask
    assert empty.any()
    assert out.ids[empty].tolist() == [[0, 1]] * int(empty.sum())
    assert torch.allclose(out.logprobs[empty], torch.tensor(-math.log(3)))


def test_a_batch_without_stored_topk_is_refused_naming_the_records(tok):
    batch = collate([example(tok, "plain-1", " no", with_topk=False)], 0)
    with pytest.raises(KDTrainError, match=r"none of the records \['plain-1'\] has teacher_topk"):
        RecordsTeacher(len(tok))(batch)
