from __future__ import annotations

import pytest
import torch
from kd_train.losses import denominator, token_mask


def test_mask_combines_labels_and_given_mask() -> None:
    labels = torch.tensor([[1, -100, 3, 4]])
    extra = torch.tensor([[True, True, False, True]])
    assert token_mask(labels, mask=extra).tolist() == [[True, False, False, True]]


def test_denominator_of_fully_masked_batch_is_one() -> None:
    assert float(denominator(torch.zeros(2, 3, dtype=torch.bool))) == 1.0


def test_denominator_uses_num_items_in_batch() -> None:
    assert float(denominator(torch.ones(2, 3, dtype=torch.bool), torch.tensor(17))) == 17.0


def test_negative_num_items_raises() -> None:
    with pytest.raises(ValueError, match=r"num_items_in_batch must be >= 0, got -3"):
        denominator(torch.ones(1, dtype=torch.bool), -3)


def test_mask_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"mask has shape \(1, 3\), expected \(1, 4\)"):
        token_mask(torch.zeros(1, 4, dtype=torch.long), mask=torch.ones(1, 3, dtype=torch.bool))


def test_zero_num_items_is_accepted_and_divides_by_one() -> None:
    assert float(denominator(torch.ones(2, 3, dtype=torch.bool), 0)) == 1.0
    assert float(denominator(torch.ones(2, 3, dtype=torch.bool), torch.tensor(0))) == 1.0
