"""Which positions count, and what the summed loss is divided by.

A position counts when its label is not ``ignore_index`` (-100, the Hugging Face
convention) and, if a mask is given, the mask is true there. Losses are summed over the
positions that count and divided by a *denominator*:

* by default the number of positions that count in this batch (at least 1, so a fully
  masked batch gives a loss of exactly 0 with a zero gradient, never NaN);
* or ``num_items_in_batch``, given by the caller: the number of real tokens in the whole
  optimiser step. With gradient accumulation over micro-batches, summing the micro-batch
  losses then gives exactly the loss, and the gradient, of one big batch; dividing each
  micro-batch by its own count would over-weight the tokens of short micro-batches.

>>> import torch
>>> from kd_train.losses.masking import denominator, token_mask
>>> labels = torch.tensor([[5, -100, 7]])
>>> token_mask(labels).tolist()
[[True, False, True]]
>>> float(denominator(token_mask(labels))), float(denominator(token_mask(labels), 10))
(2.0, 10.0)
"""

from __future__ import annotations

import torch

from kd_train.losses.checks import LossArgumentError, check_integer, check_shape

#: The label that marks a position as not counted (prompt, padding).
IGNORE_INDEX = -100


def token_mask(
    labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the boolean ``[B, T]`` mask of positions that count.

    Args:
        labels: int ``[B, T]`` target ids, ``ignore_index`` where nothing is predicted.
        ignore_index: the label value to exclude.
        mask: optional bool ``[B, T]``; a position counts only where it is true too.
    """
    check_integer("labels", labels)
    keep = labels != ignore_index
    if mask is not None:
        check_shape("mask", mask, tuple(labels.shape))
        keep = keep & mask.bool()
    return keep


def denominator(
    mask: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Return the float32 scalar that the summed loss is divided by.

    Args:
        mask: bool mask of the positions that count (any shape).
        num_items_in_batch: if given, the real-token count of the whole optimiser step
            (>= 0; 0 is treated as 1 because the summed loss is then 0 too).

    Raises:
        LossArgumentError: ``num_items_in_batch`` is negative.
    """
    if num_items_in_batch is None:
        count = mask.sum()
    else:
        count = torch.as_tensor(num_items_in_batch, device=mask.device)
        if bool(count < 0):
            raise LossArgumentError(
                f"num_items_in_batch must be >= 0, got {int(count)}; pass the number of "
                "real (non -100) label tokens in the whole optimiser step"
            )
    return count.to(torch.float32).clamp(min=1.0)
