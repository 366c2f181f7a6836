"""A teacher with its own tokenizer: it reads each record's text tokenised its own way.

The student's batches hold the student's tokens. :class:`CrossTokenizerTeacher` looks up
the records of a batch by id, runs its model on the *teacher's* tokenisation of the same
records (``bos + prompt + completion + eos``, :func:`~kd_train.data.tokenization.encode_record`)
and returns the teacher's logits ``[B, T_t, V_t]`` together with the groups of tokens that
make up the same text on both sides (:mod:`kd_train.data.alignment`), in
``TeacherOutput.cross``. Both
tokenisations and their alignment are computed once, when the run starts
(:func:`pair_records`).

>>> import tempfile
>>> from kd_train.data import KDRecord, TokenizeConfig
>>> from kd_train.teachers.cross import pair_records
>>> from kd_train.testing import train_tiny_tokenizer
>>> student, teacher = train_tiny_tokenizer(vocab_size=270), train_tiny_tokenizer(vocab_size=330)
>>> pairs = pair_records([KDRecord("r", "Q: ", "the quick fox")], student, teacher,
...                      TokenizeConfig(max_length=64))
>>> pairs["r"].alignment.unaligned  # every completion token, eos included, is in a group
0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kd_train.data.alignment import Alignment, CrossTokens, GroupIndex, align_examples
from kd_train.data.batching import Batch, collate
from kd_train.data.schema import KDRecord
from kd_train.data.tokenization import Example, TokenizeConfig, encode_record, tokenize_completion
from kd_train.errors import KDTrainError
from kd_train.teachers.base import TeacherOutput


@dataclass(frozen=True)
class PairedRecord:
    """One record as the teacher reads it, and its alignment with the student's tokens.

    Attributes:
        teacher: the teacher's example of the record.
        alignment: the groups, in both sides' positions.
    """

    teacher: Example
    alignment: Alignment


def pair_records(
    records: Iterable[KDRecord],
    student_tokenizer: Any,
    teacher_tokenizer: Any,
    config: TokenizeConfig,
) -> dict[str, PairedRecord]:
    """Tokenise every record with both tokenizers and align them; keyed by record id.

    Both sides use ``config`` (lengths, ``bos``/``eos``); the student's side is the example
    :func:`~kd_train.data.tokenization.encode_record` makes for training. The teacher's
    stored top-k, if any, is not read (it is in the student's tokens).
    """
    out: dict[str, PairedRecord] = {}
    for record in records:
        plain = dataclasses.replace(record, teacher_topk=None)
        student = encode_record(plain, student_tokenizer, config)
        teacher = encode_record(plain, teacher_tokenizer, config)
        alignment = align_examples(
            student,
            tokenize_completion(record.completion, student_tokenizer)[1],
            teacher,
            tokenize_completion(record.completion, teacher_tokenizer)[1],
            student_eos=student_tokenizer.eos_token_id if config.add_eos else None,
            teacher_eos=teacher_tokenizer.eos_token_id if config.add_eos else None,
        )
        out[record.id] = PairedRecord(teacher, alignment)
    return out


class CrossTokenizerTeacher:
    """A local teacher (``hf``) run on its own tokenisation of each batch's records.

    Args:
        teacher: the model, an :class:`~kd_train.teachers.hf.HFTeacher` (anything with
            ``logits(input_ids, attention_mask)`` and ``vocab_size``).
        pairs: :func:`pair_records` of every record the batches may hold.
        pad_id: the teacher tokenizer's padding id.
    """

    def __init__(self, teacher: Any, pairs: dict[str, PairedRecord], pad_id: int) -> None:
        self.teacher = teacher
        self.pairs = pairs
        self.pad_id = pad_id

    @property
    def vocab_size(self) -> int:
        """The teacher's vocabulary size."""
        return int(self.teacher.vocab_size)

    def __call__(self, batch: Batch) -> TeacherOutput:
        """The teacher's logits of the batch's records, with the alignment in ``cross``.

        Raises:
            kd_train.errors.KDTrainError: a record of the batch was not paired when the run started.
        """
        missing = [r for r in batch.record_ids if r not in self.pairs]
        if missing:
            raise KDTrainError(
                f"record {missing[0]!r} has no teacher tokenisation; the cross-tokenizer "
                "teacher pairs the records of data.train and data.eval when the run starts"
            )
        paired = [self.pairs[r] for r in batch.record_ids]
        inputs = collate([p.teacher for p in paired], self.pad_id)
        logits = self.teacher.logits(inputs.input_ids, inputs.attention_mask)
        s_ranges: list[tuple[int, int, int]] = []
        t_ranges: list[tuple[int, int, int]] = []
        for row, pair in enumerate(paired):
            for s0, s1, t0, t1 in pair.alignment.groups.tolist():
                s_ranges.append((row, s0, s1))
                t_ranges.append((row, t0, t1))
        device = batch.input_ids.device
        cross = CrossTokens(
            inputs.input_ids,
            GroupIndex.from_ranges(s_ranges),
            GroupIndex.from_ranges(t_ranges),
            sum(p.alignment.unaligned for p in paired),
        )
        return TeacherOutput(logits=logits.to(device), cross=cross.to(device))


def first_unpaired(examples: Iterable[Example], pairs: dict[str, PairedRecord]) -> str | None:
    """The id of the first example that has no pair (``None``: all are paired)."""
    return next((e.record_id for e in examples if e.record_id not in pairs), None)


def unaligned_tokens(pairs: dict[str, PairedRecord]) -> tuple[int, int]:
    """``(records, tokens)``: how many records have student tokens in no group, and how many."""
    counts = [p.alignment.unaligned for p in pairs.values() if p.alignment.unaligned]
    return len(counts), sum(counts)


__all__ = [
    "CrossTokenizerTeacher",
    "PairedRecord",
    "first_unpaired",
    "pair_records",
    "unaligned_tokens",
]
