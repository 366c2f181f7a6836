"""``RecordsTeacher``: the top-k that ``kd-train generate`` stored in the dataset's records.

A record's ``teacher_topk`` holds, per completion token, the teacher's top-k ids and
log-probs (:mod:`kd_train.data.schema`); tokenization puts row ``i`` at the position of
completion token ``i`` (:mod:`kd_train.data.tokenization`), and
:func:`~kd_train.data.batching.collate` batches them as ``teacher_ids`` /
``teacher_logprobs`` / ``teacher_mask``. This teacher
serves those rows: ``aligned="labels"`` (row ``t`` is the distribution of the token *at*
``t``) and no stored tail (an API returns none; the loss derives it,
:meth:`~kd_train.teachers.base.TeacherOutput.tail_logprob`). Positions without a row
(prompt, padding, an ``eos`` the record has no row for) are false in ``mask`` and hold
the placeholder ids ``0..k-1``, so that every row has distinct ids.

>>> import torch
>>> from kd_train.data import collate
>>> from kd_train.teachers.records import RecordsTeacher
>>> from kd_train.data.tokenization import Example
>>> ids = torch.tensor([1, 5, 6])
>>> ex = Example("r", ids, torch.tensor([-100, 5, 6]), {}, torch.tensor([[0, 0], [5, 2], [6, 3]]),
...              torch.log(torch.tensor([[1.0, 1.0], [0.9, 0.05], [0.8, 0.1]])),
...              torch.tensor([False, True, True]))
>>> out = RecordsTeacher(vocab_size=10)(collate([ex], pad_token_id=0))
>>> out.ids[0].tolist(), out.mask[0].tolist()
([[0, 1], [5, 2], [6, 3]], [False, True, True])
"""

from __future__ import annotations

import math

import torch

from kd_train.data.batching import Batch
from kd_train.errors import KDTrainError
from kd_train.teachers.base import TeacherOutput


class RecordsTeacher:
    """Serve the ``teacher_topk`` stored in the records of a batch (a teacher protocol).

    Args:
        vocab_size: the vocabulary the stored ids index (the student's tokenizer's).
    """

    def __init__(self, vocab_size: int) -> None:
        self._vocab_size = vocab_size

    @property
    def vocab_size(self) -> int:
        """The vocabulary the stored ids index."""
        return self._vocab_size

    def __call__(self, batch: Batch) -> TeacherOutput:
        """Return the batch's stored top-k, ``aligned="labels"``.

        Raises:
            kd_train.errors.KDTrainError: the batch holds no stored top-k at all.
        """
        ids, logprobs, mask = batch.teacher_ids, batch.teacher_logprobs, batch.teacher_mask
        if ids is None or logprobs is None or mask is None:
            raise KDTrainError(
                f"teacher.kind 'records': none of the records {batch.record_ids[:3]} has "
                "teacher_topk; make the dataset with 'kd-train generate' and top_logprobs > 0"
            )
        k = ids.shape[-1]
        placeholder = torch.arange(k, device=ids.device).expand_as(ids)
        keep = mask.unsqueeze(-1)
        return TeacherOutput(
            ids=torch.where(keep, ids, placeholder),
            logprobs=torch.where(keep, logprobs, logprobs.new_full((), -math.log(k + 1))),
            mask=mask,
            aligned="labels",
        )
