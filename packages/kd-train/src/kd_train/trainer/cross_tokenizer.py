"""The training path of ``loss.cross_tokenizer``: a teacher with its own tokenizer.

When the run starts, :func:`wrap_teachers` tokenises every record of ``data.train`` (and
``data.eval``) with the teacher's tokenizer as well, aligns the two tokenisations by
character offsets and puts the ``hf`` teacher behind a
:class:`~kd_train.teachers.cross.CrossTokenizerTeacher`. :class:`CrossDistiller` then takes
the place of :class:`~kd_train.trainer.forward.Distiller`::

    logits  = student(input_ids)                               [B, T, V_s], dense
    terms   = the other terms (ce, span_*, code_pref) on the student's own labels
    kd      = s_T * sum over groups of CrossTokenizerLoss / N   uld or align
    loss    = sum_k w_k * terms[k] + w_kd * kd

The student's logits are computed whole (no chunking): the groups join positions across
the sequence. ``N`` is the step's label-token count, as for every term, so gradient
accumulation and resume are exact as on the same-tokenizer path. The vocabulary map of
``align`` is built once from the two tokenizers (:mod:`kd_train.data.vocab_map`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from kd_train.data import Batch, TokenizeConfig, read_records
from kd_train.data.vocab_map import build_vocab_map
from kd_train.errors import KDTrainError
from kd_train.losses.combined import DistillationLoss
from kd_train.losses.config import LossConfig
from kd_train.losses.cross_tokenizer import CrossTokenizerLoss
from kd_train.losses.masking import denominator, token_mask
from kd_train.losses.schedule import weight_at
from kd_train.teachers.base import Teacher, TeacherOutput
from kd_train.teachers.cached import CachedTeacher
from kd_train.teachers.cross import (
    CrossTokenizerTeacher,
    cached_pairs,
    pair_records,
    unaligned_tokens,
)
from kd_train.teachers.hf import HFTeacher
from kd_train.teachers.http import HTTPTeacher
from kd_train.trainer.components import Splits, build_loss
from kd_train.trainer.config import RunConfig
from kd_train.trainer.forward import Distiller

logger = logging.getLogger(__name__)


def wrap_teachers(
    config: RunConfig,
    student_tokenizer: Any,
    teacher: Teacher | None,
    eval_teacher: Teacher | None,
    splits: Splits,
) -> tuple[Teacher | None, Teacher | None]:
    """Return the train and eval teachers, behind the cross-tokenizer wrapper when configured.

    Without ``loss.cross_tokenizer`` both are returned as they are. An ``hf`` or ``http``
    teacher's records are tokenised with its own tokenizer here; a ``cached`` teacher must be a
    cross-tokenizer cache (``kd-train cache-logits --student-tokenizer``), which holds its
    tokens, offsets and vocabulary map.

    Raises:
        kd_train.errors.KDTrainError: the teacher has no tokenizer, or a cache is no
            cross-tokenizer cache of these records.
    """
    if config.loss.cross_tokenizer is None:
        return teacher, eval_teacher
    data = config.data
    held = splits.eval if data.eval is None else []
    train = _wrap(teacher, data.train, splits.train + held, student_tokenizer, config)
    if data.eval is None or eval_teacher is None:
        return train, train
    return train, _wrap(eval_teacher, data.eval, splits.eval, student_tokenizer, config)


def _wrap(
    teacher: Teacher | None, path: str, examples: list[Any], student: Any, config: RunConfig
) -> CrossTokenizerTeacher:
    """Pair ``examples`` (from the file ``path``) with ``teacher``'s tokens."""
    wanted = {e.record_id for e in examples}
    records = [r for r in read_records(path) if r.id in wanted]
    if isinstance(teacher, CachedTeacher):
        pairs, vocab_map = cached_pairs(teacher, examples, records, student)
        pad_id = 0
    elif isinstance(teacher, HFTeacher | HTTPTeacher) and teacher.tokenizer is not None:
        tokenizer = teacher.tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tok_cfg = TokenizeConfig(max_length=config.data.max_length, truncation="truncate")
        pairs = pair_records(records, student, tokenizer, tok_cfg)
        vocab_map = build_vocab_map(student, tokenizer)
        pad_id = int(tokenizer.pad_token_id)
    else:
        raise KDTrainError(
            "loss.cross_tokenizer needs teacher.kind 'hf' (a saved model with its tokenizer "
            "in teacher.path), 'cached' (a cache made with --student-tokenizer) or 'http' "
            "(with teacher.tokenizer)"
        )
    records_cut, tokens = unaligned_tokens(pairs)
    if tokens:
        logger.warning(
            "loss.cross_tokenizer: %d student tokens of %d records in %s have no teacher "
            "group (the two tokenisations end at different characters, e.g. a completion "
            "cut by data.max_length); they count for the other terms only",
            tokens,
            records_cut,
            path,
        )
    return CrossTokenizerTeacher(teacher, pairs, pad_id, vocab_map)


class CrossDistiller(nn.Module):
    """The student and the cross-tokenizer loss as one module (what DDP wraps).

    Args:
        student: a ``transformers`` causal LM.
        config: the loss config; ``config.cross_tokenizer`` is set.
        vocab_map: ``(student_ids, teacher_ids)`` of the ids both vocabularies share.
    """

    def __init__(
        self,
        student: Any,
        config: LossConfig,
        vocab_map: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        cross = config.cross_tokenizer
        if cross is None:
            raise KDTrainError("CrossDistiller needs loss.cross_tokenizer")
        self.student = student
        self.config = config
        self.cross = CrossTokenizerLoss(
            cross.method,
            config.temperature,
            vocab_map,
            kl_weight=cross.kl_weight,
            uld_weight=cross.uld_weight,
        )
        others = {k: w for k, w in config.weights.items() if k != "kd"}
        self.others = (
            DistillationLoss(config.model_copy(update={"weights": others, "cross_tokenizer": None}))
            if others
            else None
        )
        self._no_split_modules = getattr(student, "_no_split_modules", None)

    def forward(
        self,
        batch: Batch,
        teacher: TeacherOutput | None,
        num_items_in_batch: float,
        step: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return the loss terms of one micro-batch (``"loss"`` carries the gradient).

        Raises:
            kd_train.errors.KDTrainError: ``teacher`` does not carry the cross-tokenizer alignment.
        """
        if teacher is None or teacher.cross is None or teacher.logits is None:
            raise KDTrainError(
                "loss.cross_tokenizer: the teacher output carries no alignment; the teacher "
                "must be a CrossTokenizerTeacher"
            )
        step = 0 if step is None else step
        logits = self.student(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).logits
        labels = batch.labels[:, 1:]
        out: dict[str, torch.Tensor] = {}
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.others is not None:
            spans = {kind: mask[:, 1:] for kind, mask in batch.span_masks.items()}
            out = self.others(
                labels,
                student_logits=logits[:, :-1],
                span_masks=spans or None,
                num_items_in_batch=num_items_in_batch,
                step=step,
            )
            loss = out.pop("loss")
        keep = token_mask(labels, self.config.ignore_index)
        denom = denominator(keep, torch.as_tensor(num_items_in_batch))
        cross = teacher.cross
        per_group = self.cross(
            logits, batch.input_ids, cross.student, teacher.logits, cross.teacher_ids, cross.teacher
        )
        t = self.config.temperature
        scale = t * t if self.config.t2_scale else 1.0
        out["kd"] = per_group.sum() * scale / denom
        out["loss"] = loss + weight_at(self.config.weights["kd"], step) * out["kd"]
        return out

    def trainable(self) -> nn.Module:
        """The module whose state checkpoints hold: the student (the loss has no parameters)."""
        return self.student


def make_distiller(
    config: LossConfig,
    student: Any,
    teacher: Teacher | None,
    dense: bool = False,
) -> Distiller | CrossDistiller:
    """The module the loop trains: a :class:`CrossDistiller` or a ``Distiller``.

    :class:`CrossDistiller` with ``loss.cross_tokenizer`` (the teacher is then the
    :class:`~kd_train.teachers.cross.CrossTokenizerTeacher` of :func:`wrap_teachers`), else
    the same-tokenizer :class:`~kd_train.trainer.forward.Distiller`.
    """
    if config.cross_tokenizer is None:
        return Distiller(student, build_loss(config, student, teacher), dense=dense)
    vocab_map = teacher.vocab_map if isinstance(teacher, CrossTokenizerTeacher) else None
    pairs = None if vocab_map is None else (vocab_map.student, vocab_map.teacher)
    return CrossDistiller(student, config, pairs)
