r"""The combined loss the trainer calls: a weighted sum of terms, built from a config.

:class:`DistillationLoss` is built from a :class:`~kd_train.losses.config.LossConfig`:

.. math::

    \mathcal{L} = \sum_{k} w_k(s)\, \frac{1}{N} \sum_{t \,\in\, \text{counted}} \ell^{k}_t

over the configured terms :math:`k` (``kd``, ``ce``, ``span_<kind>``, ``code_pref``,
``hidden``) with weights :math:`w_k(s)` at global step :math:`s`, and :math:`N` the number
of counted positions or ``num_items_in_batch`` (:mod:`kd_train.losses.masking`).

**Alignment.** Inputs are already aligned: position ``t`` of the student logits (or hidden
states), the teacher logits/top-k, the labels and the span masks all refer to the same
predicted token. The caller shifts (``logits[:, :-1]`` with ``input_ids[:, 1:]``).

Two paths give the same values and gradients: pass ``student_logits`` (dense), or
``student_hidden`` with ``lm_head_weight`` (chunked, :mod:`kd_train.losses.chunked`; never
holds more than ``chunk_size`` positions' logits). On the chunked path only ``"loss"``
carries a gradient; the other entries are detached, for logging.

>>> import torch
>>> from kd_train.losses import DistillationLoss, LossConfig
>>> from kd_train.teachers import TeacherOutput
>>> loss_fn = DistillationLoss(LossConfig(weights={"kd": 1.0, "ce": 0.5}))
>>> student = torch.randn(2, 5, 11, requires_grad=True)
>>> labels = torch.randint(0, 11, (2, 5))
>>> teacher = TeacherOutput(logits=torch.randn(2, 5, 11), aligned="view")
>>> out = loss_fn(labels, student_logits=student, teacher=teacher)
>>> sorted(out)
['ce', 'kd', 'loss']
>>> bool(torch.isclose(out["loss"], out["kd"] + 0.5 * out["ce"]))
True
>>> out["loss"].backward()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from kd_train.data.schema import SPAN_KINDS
from kd_train.losses.checks import (
    LossArgumentError,
    check_floating,
    check_integer,
    check_shape,
)
from kd_train.losses.chunked import chunked_linear_loss
from kd_train.losses.config import LossConfig
from kd_train.losses.divergences import Divergence
from kd_train.losses.hidden import HiddenStateLoss
from kd_train.losses.masking import denominator, token_mask
from kd_train.losses.schedule import is_active, weight_at
from kd_train.losses.terms import TermSpec, chunk_terms
from kd_train.teachers.base import TeacherOutput


class DistillationLoss(nn.Module):
    """Weighted sum of the configured distillation terms.

    Args:
        config: the validated loss configuration.
        student_dim: student hidden size (only for hidden-state matching).
        teacher_dim: teacher hidden size (only for hidden-state matching).
    """

    def __init__(
        self, config: LossConfig, student_dim: int | None = None, teacher_dim: int | None = None
    ) -> None:
        super().__init__()
        self.config = config
        active = frozenset(name for name, w in config.weights.items() if is_active(w))
        self.spec = TermSpec(
            terms=active - {"hidden"},
            divergence=Divergence(config.divergence, beta=config.beta, skew=config.skew),
            temperature=config.temperature,
            t2_scale=config.t2_scale,
            tail=config.tail,
            vocab_policy=config.vocab_policy,
            span_loss=config.span_loss,
            code_pref_margin=config.code_pref_margin,
        )
        self.hidden: HiddenStateLoss | None = None
        if config.hidden is not None and "hidden" in active:
            if student_dim is None or teacher_dim is None:
                raise LossArgumentError(
                    "hidden-state matching needs student_dim and teacher_dim (the models' "
                    "hidden sizes) to build its projections"
                )
            self.hidden = HiddenStateLoss(
                student_dim, teacher_dim, config.hidden.layer_map, config.hidden.kind
            )

    def forward(
        self,
        labels: torch.Tensor,
        *,
        student_logits: torch.Tensor | None = None,
        student_hidden: torch.Tensor | None = None,
        lm_head_weight: torch.Tensor | None = None,
        lm_head_bias: torch.Tensor | None = None,
        teacher: TeacherOutput | None = None,
        span_masks: Mapping[str, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        student_layers: Sequence[torch.Tensor] | None = None,
        step: int = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{term: value, ..., "loss": weighted total}``.

        The same keys come back on both paths and for any batch, a fully masked one
        included (its terms are 0).

        Args:
            labels: int64 ``[B, T]``, ``ignore_index`` (-100) where nothing is predicted.
            student_logits: ``[B, T, V]`` (dense path, the reference), or else
            student_hidden: ``[B, T, H]`` final hidden states (chunked path).
            lm_head_weight: the student's ``lm_head`` weight ``[V, H]`` (chunked path).
            lm_head_bias: its bias ``[V]``, if it has one.
            teacher: the teacher in the next-token view
                (:meth:`~kd_train.teachers.base.TeacherOutput.next_token`), ``[B, T, ...]``:
                dense logits, hidden states with the teacher's ``lm_head`` (its logits are
                then made one chunk at a time), or top-k with tail; its ``layers`` feed
                hidden-state matching. ``None`` for a CE-only loss.
            span_masks: ``kind -> bool [B, T]`` for kinds in
                :data:`~kd_train.data.schema.SPAN_KINDS` (see :mod:`kd_train.losses.spans`).
            mask: optional bool ``[B, T]``; positions outside it do not count.
            student_layers: per-layer student hidden states (hidden-state matching).
            step: global optimiser step, for weight schedules.
            num_items_in_batch: real tokens in the whole optimiser step (gradient
                accumulation); default: the counted positions of this batch.

        Raises:
            LossArgumentError: an input is missing, has the wrong shape or dtype, or a
                label is outside the student vocabulary.
        """
        check_integer("labels", labels)
        if labels.dim() != 2:
            raise LossArgumentError(f"labels must be [B, T], got shape {tuple(labels.shape)}")
        shape = tuple(labels.shape)
        keep = token_mask(labels, self.config.ignore_index, mask)
        denom = denominator(keep, num_items_in_batch)
        rows = keep.reshape(-1).nonzero().squeeze(-1)
        flat_labels = labels.reshape(-1)
        spans = self._span_rows(span_masks, shape)
        weights = {name: weight_at(w, step) for name, w in self.config.weights.items()}
        if teacher is not None:
            self._check_teacher(teacher, shape)

        def chunk_fn(
            logits: torch.Tensor, idx: torch.Tensor
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            terms = chunk_terms(
                logits,
                flat_labels[idx],
                None if teacher is None else teacher.rows(idx),
                {kind: m[idx] for kind, m in spans.items()},
                self.spec,
                teacher_scratch=True,  # rows() made these rows for this chunk alone
            )
            total = sum(
                (weights[name] * value for name, value in terms.items()), logits.new_zeros(())
            )
            return total, terms

        if student_logits is not None:
            check_floating("student_logits", student_logits)
            check_shape("student_logits", student_logits, (*shape, None))
            vocab = student_logits.shape[-1]
            self._check_labels(flat_labels[rows], vocab)
            logits = student_logits.reshape(-1, vocab)[rows]
            total, terms = chunk_fn(logits, rows)
        elif student_hidden is not None and lm_head_weight is not None:
            check_floating("student_hidden", student_hidden)
            check_shape("student_hidden", student_hidden, (*shape, None))
            check_shape("lm_head_weight", lm_head_weight, (None, student_hidden.shape[-1]))
            self._check_labels(flat_labels[rows], lm_head_weight.shape[0])
            hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
            total, terms = chunked_linear_loss(
                hidden, lm_head_weight, lm_head_bias, rows, chunk_fn, self.config.chunk_size
            )
        else:
            raise LossArgumentError(
                "pass student_logits [B, T, V], or student_hidden [B, T, H] with lm_head_weight"
            )
        out = {name: value / denom for name, value in terms.items()}
        loss = total / denom
        if self.hidden is not None:
            teacher_layers = () if teacher is None else teacher.layers
            if student_layers is None or not teacher_layers:
                raise LossArgumentError(
                    "the 'hidden' term needs student_layers and the teacher's layers "
                    "(run both models with output_hidden_states=True)"
                )
            out["hidden"] = self.hidden(student_layers, teacher_layers, keep, denom)
            loss = loss + weights["hidden"] * out["hidden"]
        out["loss"] = loss
        return out

    @staticmethod
    def _check_teacher(teacher: TeacherOutput, shape: tuple[int, ...]) -> None:
        if teacher.aligned != "view":
            raise LossArgumentError(
                f"the teacher output is aligned to {teacher.aligned!r}; pass "
                "teacher.next_token(), which shifts it into the next-token view"
            )
        if teacher.positions != shape:
            raise LossArgumentError(
                f"the teacher covers positions {teacher.positions} but labels are {shape}; "
                "run the teacher on the same batch and shift it with next_token()"
            )

    def _span_rows(
        self, span_masks: Mapping[str, torch.Tensor] | None, shape: tuple[int, ...]
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for kind, m in (span_masks or {}).items():
            if kind not in SPAN_KINDS:
                raise LossArgumentError(
                    f"span_masks has kind {kind!r}; allowed kinds: {', '.join(SPAN_KINDS)}"
                )
            check_shape(f"span_masks[{kind!r}]", m, shape)
            out[kind] = m.reshape(-1).bool()
        return out

    @staticmethod
    def _check_labels(labels: torch.Tensor, vocab: int) -> None:
        if labels.numel() and (int(labels.max()) >= vocab or int(labels.min()) < 0):
            bad = int(labels.max()) if int(labels.max()) >= vocab else int(labels.min())
            raise LossArgumentError(
                f"labels holds id {bad}, outside the student vocabulary [0, {vocab}); mark "
                "positions without a target with ignore_index"
            )
