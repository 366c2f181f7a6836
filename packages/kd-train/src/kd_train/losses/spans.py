"""Labelled character spans to token positions, and the span masks the losses consume.

A record's spans (:class:`~kd_train.data.schema.Span`, kinds
:data:`~kd_train.data.schema.SPAN_KINDS`) are character ranges of its completion. A fast
tokenizer's ``offset_mapping`` gives each token's character range; a token belongs to a
span when the two ranges overlap (``tok_start < end and tok_end > start``), so a token
that straddles a span boundary is inside. Special tokens (offset ``(0, 0)``) never are.

The masks mark *input* token positions, like the token ids. The losses take inputs that
are already aligned (position ``t`` of logits, labels and masks is the prediction of one
token), so shift a mask exactly as you shift the labels: ``labels = ids[:, 1:]`` goes with
``mask[:, 1:]``.

>>> from kd_train.data.schema import Span
>>> from kd_train.losses.spans import span_token_masks
>>> offsets = [(0, 4), (4, 5), (5, 9), (9, 10)]    # "get_(weather)" style pieces
>>> span_token_masks(offsets, [Span("tool_name", 4, 9)], char_offset=0)["tool_name"]
[False, True, True, False]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from kd_train.data.schema import SPAN_KINDS, Span
from kd_train.losses.checks import LossArgumentError


def span_token_masks(
    offsets: Sequence[tuple[int, int]] | Sequence[Sequence[int]],
    spans: Iterable[Span],
    *,
    char_offset: int = 0,
    kinds: Sequence[str] = SPAN_KINDS,
) -> dict[str, list[bool]]:
    """Map character spans to per-token booleans, one list per kind in ``kinds``.

    Args:
        offsets: the tokenizer's ``offset_mapping`` for the tokenized text, one
            ``(start, end)`` pair of character indices per token.
        spans: spans whose ``start``/``end`` index the completion.
        char_offset: where the completion starts inside the tokenized text (e.g.
            ``len(prompt)`` when prompt and completion were tokenized together).
        kinds: the kinds to return masks for.

    Raises:
        LossArgumentError: a span has an unknown kind or ``start >= end``.
    """
    masks = {kind: [False] * len(offsets) for kind in kinds}
    for span in spans:
        if span.kind not in masks:
            raise LossArgumentError(f"span kind {span.kind!r} is not one of {', '.join(kinds)}")
        if span.start >= span.end:
            raise LossArgumentError(
                f"span {span.kind!r} has start {span.start} >= end {span.end}; spans are "
                "non-empty character ranges [start, end)"
            )
        lo, hi = span.start + char_offset, span.end + char_offset
        row = masks[span.kind]
        for i, (tok_start, tok_end) in enumerate(offsets):
            if tok_start == tok_end:
                continue
            if tok_start < hi and tok_end > lo:
                row[i] = True
    return masks


def span_mask_tensors(
    per_example: Sequence[dict[str, list[bool]]], length: int, kinds: Sequence[str] = SPAN_KINDS
) -> dict[str, torch.Tensor]:
    """Stack per-example masks into bool ``[B, length]`` tensors (right-padded with False).

    >>> from kd_train.losses.spans import span_mask_tensors
    >>> rows = [{"tool_name": [True]}, {"tool_name": [False, True]}]
    >>> out = span_mask_tensors(rows, 3, ["tool_name"])
    >>> out["tool_name"].tolist()
    [[True, False, False], [False, True, False]]
    """
    out = {kind: torch.zeros(len(per_example), length, dtype=torch.bool) for kind in kinds}
    for b, masks in enumerate(per_example):
        for kind in kinds:
            row = masks.get(kind, [])[:length]
            out[kind][b, : len(row)] = torch.tensor(row, dtype=torch.bool)
    return out
