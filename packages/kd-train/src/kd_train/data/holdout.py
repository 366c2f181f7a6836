"""Held out by content: no evaluation example repeats a training example's token sequence.

Two examples are the same when their token sequences are: :func:`content_key` is a
16-byte BLAKE2b digest of the ``int64`` token ids (prompt, completion, ``bos``/``eos``:
exactly what the model is shown). Ids, metadata and teacher top-k do not count, so a
training row copied under another id is still caught.

Two policies, one per way of making a held-out split:

``refuse`` (a separate eval file, ``data.eval``)
    The user chose the file; a file that repeats training rows measures memorisation, so
    :func:`refuse_overlap` raises :class:`HeldOutOverlapError` naming how many eval
    examples repeat a training example and the first record ids of both sides.
``drop`` (``data.eval_fraction``, a slice of the training file)
    The split is kd's own; :func:`drop_overlap` removes every held-out example whose
    tokens appear in the training part and says how many in an :class:`OverlapReport`,
    which the run manifest records. Nothing is dropped silently.

>>> import torch
>>> from kd_train.data.holdout import content_key, drop_overlap
>>> from kd_train.data.tokenization import Example
>>> def ex(rid, ids):
...     t = torch.tensor(ids)
...     return Example(rid, t, t, {})
>>> train = [ex("a", [1, 2, 3]), ex("b", [4, 5])]
>>> kept, report = drop_overlap(train, [ex("c", [4, 5]), ex("d", [6])], split="eval")
>>> [e.record_id for e in kept], report.dropped, report.first
(['d'], 1, [('c', 'b')])
>>> content_key(torch.tensor([4, 5])) == content_key([4, 5])
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kd_train.data.tokenization import Example
from kd_train.errors import KDTrainError

#: How many overlapping record-id pairs a report or an error names.
MAX_NAMED = 3


class HeldOutOverlapError(KDTrainError):
    """An evaluation file repeats training examples (same token sequence)."""


def content_key(ids: torch.Tensor | Sequence[int]) -> bytes:
    """Return the 16-byte BLAKE2b digest of a token sequence (as ``int64`` little-endian).

    >>> from kd_train.data.holdout import content_key
    >>> len(content_key([1, 2])), content_key([1, 2]) == content_key([2, 1])
    (16, False)
    """
    tensor = torch.as_tensor(ids, dtype=torch.int64).reshape(-1).contiguous()
    data = tensor.numpy().astype("<i8", copy=False).tobytes()
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class OverlapReport:
    """What the content check of one held-out split found.

    Attributes:
        split: the split's name (``"eval"``).
        policy: ``"drop"`` (removed, counted) or ``"refuse"`` (an error when any).
        checked: held-out examples looked at.
        overlapping: how many of them repeat a training example's token sequence.
        dropped: how many were removed (``overlapping`` under ``drop``, else 0).
        first: up to :data:`MAX_NAMED` ``(held_out_id, training_id)`` pairs.
    """

    split: str
    policy: str
    checked: int = 0
    overlapping: int = 0
    dropped: int = 0
    first: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (for the run manifest).

        >>> from kd_train.data.holdout import OverlapReport
        >>> OverlapReport("eval", "drop", checked=4, overlapping=1, dropped=1,
        ...               first=[("e1", "t7")]).to_dict()["first"]
        [['e1', 't7']]
        """
        return {
            "split": self.split,
            "policy": self.policy,
            "checked": self.checked,
            "overlapping": self.overlapping,
            "dropped": self.dropped,
            "first": [list(pair) for pair in self.first],
        }

    def describe(self) -> str:
        """One line: how many held-out examples repeat training ones, and the first ids."""
        pairs = ", ".join(f"{h!r} = train {t!r}" for h, t in self.first)
        return (
            f"{self.overlapping} of {self.checked} {self.split} examples have the token "
            f"sequence of a training example (first: {pairs})"
        )


def _overlap(
    train: Sequence[Example], held: Sequence[Example], split: str, policy: str
) -> tuple[list[Example], OverlapReport]:
    seen: dict[bytes, str] = {}
    for example in train:
        seen.setdefault(content_key(example.input_ids), example.record_id)
    report = OverlapReport(split, policy, checked=len(held))
    kept = []
    for example in held:
        twin = seen.get(content_key(example.input_ids))
        if twin is None:
            kept.append(example)
            continue
        report.overlapping += 1
        if len(report.first) < MAX_NAMED:
            report.first.append((example.record_id, twin))
    return kept, report


def drop_overlap(
    train: Sequence[Example], held: Sequence[Example], *, split: str = "eval"
) -> tuple[list[Example], OverlapReport]:
    """Remove from ``held`` every example whose token sequence is in ``train``.

    Returns:
        The kept held-out examples (in order) and the report (``dropped`` counted).
    """
    kept, report = _overlap(train, held, split, "drop")
    report.dropped = report.overlapping
    return kept, report


def refuse_overlap(
    train: Sequence[Example], held: Sequence[Example], *, split: str = "eval", source: str = ""
) -> OverlapReport:
    """Raise when any example of ``held`` has the token sequence of one in ``train``.

    Args:
        train: the training examples.
        held: the held-out examples.
        split: the held-out split's name, for the message.
        source: the held-out file, for the message.

    Returns:
        The report (no overlap) for the run manifest.

    Raises:
        HeldOutOverlapError: naming the count and the first overlapping record ids.
    """
    _, report = _overlap(train, held, split, "refuse")
    if report.overlapping:
        where = f"{source}: " if source else ""
        raise HeldOutOverlapError(
            f"{where}{report.describe()}; an eval set must be held out from training: "
            "remove those records from one of the files"
        )
    return report
