"""Per-chunk terms: the teacher rows handed to a chunk cannot be changed by it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from kd_train.losses.terms import TeacherRows


def test_teacher_rows_are_immutable() -> None:
    rows = TeacherRows(logits=torch.zeros(2, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rows.logits = torch.ones(2, 3)  # type: ignore[misc]
