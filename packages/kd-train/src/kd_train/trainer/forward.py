"""One micro-batch forward: the student, the teacher's output and the loss, as one module.

:class:`Distiller` holds the student and the loss; its ``forward`` is the whole loss
computation of a micro-batch, so DDP and FSDP wrap it and every parameter it uses (the
student's, and the learned projections of hidden-state matching) is used inside one
forward call, as they require.

**The chunked path** (the default): the student's base model returns its final hidden
states ``[B, T, H]`` and the loss computes every term chunk by chunk from them and the
``lm_head`` weight (:mod:`kd_train.losses.chunked`), so no ``[B, T, V]`` logits tensor of
the student is ever built. A dense teacher's logits are made per chunk the same way
(:meth:`~kd_train.teachers.base.TeacherOutput.rows`). A student whose logits are not
exactly ``lm_head(base_model(x))`` (checked once, :func:`~kd_train.teachers.hf.logits_split`)
takes the dense path, as does ``dense=True``: the reference the tests hold the chunked
path to.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kd_train.data import Batch
from kd_train.losses.combined import DistillationLoss
from kd_train.teachers.base import TeacherOutput
from kd_train.teachers.hf import logits_split


class Distiller(nn.Module):
    """The student and the loss as one module (what DDP and FSDP wrap).

    Args:
        student: a ``transformers`` causal LM.
        loss: the combined loss.
        dense: compute the loss from the student's full logits (the test reference).
    """

    def __init__(self, student: Any, loss: DistillationLoss, *, dense: bool = False) -> None:
        super().__init__()
        self.student = student
        self.loss = loss
        #: True when this module computes the loss from full logits.
        self.dense = dense or not logits_split(student)
        # FSDP shards the decoder layers the student names (kd_train.trainer.distributed).
        self._no_split_modules = getattr(student, "_no_split_modules", None)

    def forward(
        self,
        batch: Batch,
        teacher: TeacherOutput | None,
        num_items_in_batch: float,
        step: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return the loss terms of one micro-batch (``"loss"`` carries the gradient).

        ``teacher`` is the teacher's output for the same batch, in its own alignment; it is
        shifted here, like the labels, into the next-token view.
        """
        layers = self.loss.hidden is not None
        inputs = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "use_cache": False,
            "output_hidden_states": layers,
        }
        student: dict[str, Any]
        if self.dense:
            out = self.student(**inputs)
            student = {"student_logits": out.logits[:, :-1]}
        else:
            out = self.student.base_model(**inputs)
            head = self.student.get_output_embeddings()
            student = {
                "student_hidden": out.last_hidden_state[:, :-1],
                "lm_head_weight": head.weight,
                "lm_head_bias": getattr(head, "bias", None),
            }
        extra = {} if step is None else {"step": step}
        spans = {kind: mask[:, 1:] for kind, mask in batch.span_masks.items()}
        result: dict[str, torch.Tensor] = self.loss(
            batch.labels[:, 1:],
            **student,
            teacher=None if teacher is None else teacher.next_token(),
            span_masks=spans or None,
            student_layers=[h[:, :-1] for h in out.hidden_states] if layers else None,
            num_items_in_batch=num_items_in_batch,
            **extra,
        )
        return result

    def trainable(self) -> nn.Module:
        """The module whose state checkpoints hold: the student, plus the loss if it learns.

        A loss without parameters keeps the checkpoint's names those of the student alone.
        """
        return self if any(True for _ in self.loss.parameters()) else self.student
