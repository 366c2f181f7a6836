r"""Align two tokenisations of the same text by character offsets (cross-tokenizer KD).

A teacher and a student with different tokenizers cut the same completion into different
tokens. Both tokenise the text themselves (a fast tokenizer's ``return_offsets_mapping``
gives each token's characters ``[a, b)``); the tokens are then grouped into the smallest
spans of text on which the two cuts agree::

    text      "héllo wörld"
    student   [hé][llo][ wör][ld]            boundaries after 2, 5, 9, 11
    teacher   [h][é][llo][ w][ör][ld]        boundaries after 1, 2, 5, 7, 9, 11
    groups    {hé | h é}  {llo | llo}  { wör |  w ör}  {ld | ld}

**Boundaries.** Token ``i`` ends a piece of text at character ``e_i`` (its end, made
non-decreasing) unless the next token starts before ``e_i``: byte-level BPE and
SentencePiece's byte fallback (``<0xNN>``) split a multi-byte character over several
tokens that all report that character's range, and no boundary lies inside a character.
A group closes where both sides have a boundary at the same character; the groups cover
every token in order. Tokens after the last common boundary (a completion one side cut
short) are in no group and are counted (:attr:`Alignment.unaligned`), never dropped
silently. The ``eos`` that ends both completions is a group of its own.

>>> from kd_train.data.alignment import align_offsets
>>> student = [(0, 2), (2, 5), (5, 9), (9, 11)]
>>> teacher = [(0, 1), (1, 2), (2, 5), (5, 7), (7, 9), (9, 11)]
>>> align_offsets(student, teacher)
[((0, 1), (0, 2)), ((1, 2), (2, 3)), ((2, 3), (3, 5)), ((3, 4), (5, 6))]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kd_train.data.tokenization import IGNORE_INDEX, Example, TokenizationError

# One group: ``((student_start, student_stop), (teacher_start, teacher_stop))`` token ranges.
Group = tuple[tuple[int, int], tuple[int, int]]


def boundaries(offsets: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Return ``(tokens_before, character)`` for every boundary of a tokenisation.

    ``offsets`` are the tokens' ``[a, b)`` character ranges in order.

    >>> from kd_train.data.alignment import boundaries
    >>> boundaries([(0, 1), (1, 2), (1, 2), (2, 4)])  # tokens 1 and 2 share one character
    [(1, 1), (3, 2), (4, 4)]
    """
    out: list[tuple[int, int]] = []
    end = 0
    for i, (_, b) in enumerate(offsets):
        end = max(end, int(b))
        if i + 1 == len(offsets) or end <= int(offsets[i + 1][0]):
            out.append((i + 1, end))
    return out


def align_offsets(
    student: Sequence[Sequence[int]], teacher: Sequence[Sequence[int]]
) -> list[Group]:
    """Group two tokenisations of one text into the spans where both have a boundary.

    Returns the groups in text order; tokens after the last common boundary are in none.
    """
    groups: list[Group] = []
    s_bounds, t_bounds = boundaries(student), boundaries(teacher)
    i = j = 0
    s_start = t_start = 0
    while i < len(s_bounds) and j < len(t_bounds):
        (s_tokens, s_char), (t_tokens, t_char) = s_bounds[i], t_bounds[j]
        if s_char < t_char:
            i += 1
        elif t_char < s_char:
            j += 1
        else:
            groups.append(((s_start, s_tokens), (t_start, t_tokens)))
            s_start, t_start = s_tokens, t_tokens
            i, j = i + 1, j + 1
    return groups


@dataclass(frozen=True)
class Alignment:
    """The groups of one record, in absolute token positions of each side's example.

    Attributes:
        groups: ``int64 [G, 4]``: ``(s_start, s_stop, t_start, t_stop)`` per group, label
            positions of the student's and the teacher's ``input_ids`` (the tokens the
            group's text is made of; the logits that predict them are one row earlier).
        unaligned: student completion tokens that are in no group (no KD target).
    """

    groups: torch.Tensor
    unaligned: int


def completion_span(example: Example) -> tuple[int, int]:
    """``(head, stop)``: the label positions of an example's completion, ``eos`` excluded.

    Raises:
        TokenizationError: the example has no completion token.
    """
    labelled = (example.labels != IGNORE_INDEX).nonzero().squeeze(-1)
    if labelled.numel() == 0:
        raise TokenizationError(f"record {example.record_id!r} has no completion token")
    head, stop = int(labelled[0]), int(labelled[-1]) + 1
    return head, stop


def align_examples(
    student: Example,
    student_offsets: torch.Tensor,
    teacher: Example,
    teacher_offsets: torch.Tensor,
    *,
    student_eos: int | None,
    teacher_eos: int | None,
) -> Alignment:
    """Align one record tokenised by both sides (see the module docstring).

    Args:
        student: the student's example of the record.
        student_offsets: the character ranges of its completion tokens, ``[n_s, 2]``.
        teacher: the teacher's example of the same record.
        teacher_offsets: the character ranges of the teacher's completion tokens.
        student_eos: the student's ``eos`` id (``None``: no ``eos`` group).
        teacher_eos: the teacher's ``eos`` id.

    Raises:
        TokenizationError: an example holds more completion tokens than its offsets.
    """
    s_head, s_stop = completion_span(student)
    t_head, t_stop = completion_span(teacher)
    s_eos = _ends_with(student, s_stop, student_eos)
    t_eos = _ends_with(teacher, t_stop, teacher_eos)
    s_n, t_n = s_stop - s_head - int(s_eos), t_stop - t_head - int(t_eos)
    for name, n, offsets in (("student", s_n, student_offsets), ("teacher", t_n, teacher_offsets)):
        if n > offsets.shape[0]:
            raise TokenizationError(
                f"record {student.record_id!r}: the {name} example has {n} completion tokens "
                f"but offsets for {offsets.shape[0]}; tokenise the completion the same way"
            )
    rows = [
        (s_head + s0, s_head + s1, t_head + t0, t_head + t1)
        for (s0, s1), (t0, t1) in align_offsets(
            student_offsets[:s_n].tolist(), teacher_offsets[:t_n].tolist()
        )
    ]
    covered = rows[-1][1] - s_head if rows else 0
    if s_eos and t_eos and covered == s_n and (rows[-1][3] - t_head if rows else 0) == t_n:
        rows.append((s_stop - 1, s_stop, t_stop - 1, t_stop))
        covered += 1
    # A group at position 0 (no bos, empty prompt) has no position that predicts it.
    unpredicted = sum(s1 - s0 for s0, s1, t0, _ in rows if s0 == 0 or t0 == 0)
    rows = [row for row in rows if row[0] > 0 and row[2] > 0]
    groups = torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)
    return Alignment(groups, unaligned=s_stop - s_head - covered + unpredicted)


def _ends_with(example: Example, stop: int, eos: int | None) -> bool:
    """True when the completion's last label is ``eos`` (it was not cut)."""
    return eos is not None and not example.truncated and int(example.labels[stop - 1]) == eos


@dataclass(frozen=True)
class GroupIndex:
    """Where a batch's groups sit on one side, as flat index tensors.

    Attributes:
        first_row: ``int64 [G]``: the batch row of each group.
        first_pos: ``int64 [G]``: the label position of each group's first token (its
            distribution is the logits at ``first_pos - 1``).
        rest_group: ``int64 [R]``: the group of each further token of a group.
        rest_row: ``int64 [R]``: its batch row.
        rest_pos: ``int64 [R]``: its label position.
    """

    first_row: torch.Tensor
    first_pos: torch.Tensor
    rest_group: torch.Tensor
    rest_row: torch.Tensor
    rest_pos: torch.Tensor

    @classmethod
    def from_ranges(cls, ranges: list[tuple[int, int, int]]) -> GroupIndex:
        """Build from ``(row, start, stop)`` per group (label positions ``start .. stop-1``).

        >>> from kd_train.data.alignment import GroupIndex
        >>> idx = GroupIndex.from_ranges([(0, 3, 4), (0, 4, 7)])
        >>> idx.first_pos.tolist(), idx.rest_group.tolist(), idx.rest_pos.tolist()
        ([3, 4], [1, 1], [5, 6])
        """
        rest = [(g, row, pos) for g, (row, a, b) in enumerate(ranges) for pos in range(a + 1, b)]

        def column(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64)

        return cls(
            column([r for r, _, _ in ranges]),
            column([a for _, a, _ in ranges]),
            column([g for g, _, _ in rest]),
            column([r for _, r, _ in rest]),
            column([p for _, _, p in rest]),
        )

    def to(self, device: torch.device | str) -> GroupIndex:
        """The index on ``device``."""
        return GroupIndex(*(t.to(device) for t in vars(self).values()))


@dataclass(frozen=True)
class CrossTokens:
    """A batch's cross-tokenizer alignment, carried by the teacher's output.

    Attributes:
        teacher_ids: ``int64 [B, T_t]``: the teacher's tokens of the batch's records.
        student: the groups in the student's positions.
        teacher: the same groups in the teacher's positions.
        unaligned: student completion tokens of the batch that are in no group.
    """

    teacher_ids: torch.Tensor
    student: GroupIndex
    teacher: GroupIndex
    unaligned: int = 0

    def to(self, device: torch.device | str) -> CrossTokens:
        """The alignment on ``device``."""
        return CrossTokens(
            self.teacher_ids.to(device),
            self.student.to(device),
            self.teacher.to(device),
            self.unaligned,
        )
