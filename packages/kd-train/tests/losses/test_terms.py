"""Per-chunk terms: the teacher rows handed to a chunk cannot be changed by it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from kd_train.teachers.base import TeacherOutput


def test_teacher_rows_are_immutable() -> None:
    rows = TeacherOutput(logits=torch.zeros(2, 3), aligned="view")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rows.logits = torch.ones(2, 3)  # type: ignore[misc]
