from __future__ import annotations

import pytest
import torch
from kd_train.losses import align_dense
from kd_train.losses.vocab import shared_vocab


def test_mismatch_raises_by_default_naming_both_sizes() -> None:
    with pytest.raises(ValueError, match=r"teacher has 49152 ids and the student 32000"):
        align_dense(torch.zeros(1, 32000), torch.zeros(1, 49152))


def test_truncate_keeps_the_shared_ids() -> None:
    s, t = align_dense(torch.arange(6.0)[None], torch.arange(4.0)[None], "truncate")
    assert s.tolist() == [[0.0, 1.0, 2.0, 3.0]]
    assert t.shape == (1, 4)


def test_padding_policy_is_refused() -> None:
    with pytest.raises(ValueError, match=r"padding is not offered"):
        align_dense(torch.zeros(1, 3), torch.zeros(1, 4), "pad")


def test_shared_vocab_error_policy_raises() -> None:
    with pytest.raises(ValueError, match=r"teacher has 330 ids and the student 320"):
        shared_vocab(320, 330)


def test_shared_vocab_of_equal_sizes_is_that_size_under_either_policy() -> None:
    assert shared_vocab(320, 320) == 320
    assert shared_vocab(320, 320, "truncate") == 320
    assert shared_vocab(330, 320, "truncate") == 320


def test_align_dense_compares_the_last_axis_of_a_batch() -> None:
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 8)
    s, t = align_dense(student, teacher, "truncate")
    assert s.shape == t.shape == (2, 3, 5)
    assert torch.equal(t, teacher[..., :5])
    assert torch.equal(s, student)
    with pytest.raises(ValueError, match=r"teacher has 8 ids and the student 5"):
        align_dense(student, teacher)
    s, t = align_dense(torch.randn(2, 4, 6), torch.randn(2, 4, 6))  # same V, different T, B
    assert s.shape == t.shape == (2, 4, 6)
