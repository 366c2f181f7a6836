"""Batches of tokenized examples: right padding, attention mask, and the next-token view.

:func:`collate` pads :class:`~kd_train.data.tokenization.Example` s to one length ``T`` (the
longest, optionally rounded up to a multiple) on the right: ``input_ids`` with the pad id,
``labels`` with ``-100``, masks with ``False``, and ``attention_mask`` is 1 on real tokens.

The losses take the *next-token view*: position ``t`` is one prediction and its target::

    hidden/logits[:, :-1]  <->  labels[:, 1:], span_masks[k][:, 1:]

and the teacher shifted by its own
:meth:`~kd_train.teachers.base.TeacherOutput.next_token` (the stored top-k of a record sits
at the label positions, so it shifts like the labels). The trainer makes this view
(:mod:`kd_train.trainer.forward`); the losses never shift again.

>>> import torch
>>> from kd_train.data.batching import collate
>>> from kd_train.data.tokenization import Example
>>> def ex(ids, n_prompt):
...     ids = torch.tensor(ids)
...     labels = ids.clone()
...     labels[:n_prompt] = -100
...     return Example("x", ids, labels, {"tool_name": torch.zeros(len(ids), dtype=torch.bool)})
>>> batch = collate([ex([1, 5, 6, 2], 2), ex([1, 7, 2], 2)], pad_token_id=3)
>>> batch.input_ids.tolist(), batch.attention_mask.tolist()
([[1, 5, 6, 2], [1, 7, 2, 3]], [[1, 1, 1, 1], [1, 1, 1, 0]])
>>> batch.labels[:, 1:].tolist()  # the targets of positions 0 .. T-2
[[-100, 6, 2], [-100, 2, -100]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kd_train.data.tokenization import IGNORE_INDEX, Example, TokenizationError


@dataclass(frozen=True)
class Batch:
    """Padded examples; every tensor is ``[B, T]`` (teacher ids/log-probs ``[B, T, k]``).

    Attributes:
        record_ids: the records' ids, in batch order.
        input_ids: ``int64``; the pad id after each example's end.
        attention_mask: ``int64``; 1 on real tokens, 0 on padding.
        labels: ``int64``, unshifted; ``-100`` on prompt and padding.
        span_masks: ``bool`` per span kind.
        teacher_ids: ``int64 [B, T, k]`` or ``None`` when no example has teacher top-k.
        teacher_logprobs: ``float32 [B, T, k]`` or ``None``.
        teacher_mask: ``bool``, true where a teacher top-k row exists, or ``None``.
    """

    record_ids: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    span_masks: dict[str, torch.Tensor]
    teacher_ids: torch.Tensor | None = None
    teacher_logprobs: torch.Tensor | None = None
    teacher_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """Return the batch with every tensor on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Batch(
            self.record_ids,
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            {kind: mask.to(device) for kind, mask in self.span_masks.items()},
            move(self.teacher_ids),
            move(self.teacher_logprobs),
            move(self.teacher_mask),
        )


def _pad(tensors: Sequence[torch.Tensor], length: int, value: float | bool) -> torch.Tensor:
    out = tensors[0].new_full((len(tensors), length, *tensors[0].shape[1:]), value)
    for row, tensor in enumerate(tensors):
        out[row, : tensor.shape[0]] = tensor
    return out


def collate(
    examples: Sequence[Example], pad_token_id: int, *, pad_to_multiple_of: int | None = None
) -> Batch:
    """Pad ``examples`` on the right into a :class:`Batch`.

    Examples without teacher top-k get ``teacher_mask`` false when others in the batch
    have it. Use ``functools.partial(collate, pad_token_id=...)`` as a DataLoader's
    ``collate_fn``.

    Args:
        examples: at least one example.
        pad_token_id: id written after each example's end (often the tokenizer's pad or eos).
        pad_to_multiple_of: round ``T`` up to a multiple of this.

    Raises:
        ValueError: ``examples`` is empty.
        TokenizationError: the examples' teacher top-k have different ``k``.
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    length = max(int(e.input_ids.shape[0]) for e in examples)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    kinds = examples[0].span_masks.keys()
    teacher_ids = teacher_logprobs = teacher_mask = None
    with_topk = [e for e in examples if e.teacher_ids is not None]
    if with_topk:
        ks = {int(e.teacher_ids.shape[1]) for e in with_topk if e.teacher_ids is not None}
        if len(ks) > 1:
            raise TokenizationError(
                f"cannot batch teacher top-k of different k {sorted(ks)} "
                f"(records {[e.record_id for e in with_topk]}); store one k per dataset"
            )
        k = ks.pop()

        def rows(e: Example) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if e.teacher_ids is None or e.teacher_logprobs is None or e.teacher_mask is None:
                n = int(e.input_ids.shape[0])
                return (
                    torch.zeros(n, k, dtype=torch.int64),
                    torch.zeros(n, k, dtype=torch.float32),
                    torch.zeros(n, dtype=torch.bool),
                )
            return e.teacher_ids, e.teacher_logprobs, e.teacher_mask

        ids_l, lps_l, mask_l = zip(*(rows(e) for e in examples), strict=True)
        teacher_ids = _pad(ids_l, length, 0)
        teacher_logprobs = _pad(lps_l, length, 0.0)
        teacher_mask = _pad(mask_l, length, False)
    input_ids = _pad([e.input_ids for e in examples], length, pad_token_id)
    return Batch(
        record_ids=[e.record_id for e in examples],
        input_ids=input_ids,
        attention_mask=_pad([torch.ones_like(e.input_ids) for e in examples], length, 0),
        labels=_pad([e.labels for e in examples], length, IGNORE_INDEX),
        span_masks={k: _pad([e.span_masks[k] for e in examples], length, False) for k in kinds},
        teacher_ids=teacher_ids,
        teacher_logprobs=teacher_logprobs,
        teacher_mask=teacher_mask,
    )
