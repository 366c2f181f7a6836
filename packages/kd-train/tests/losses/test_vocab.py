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
