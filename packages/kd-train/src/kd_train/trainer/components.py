"""Build what the loop needs from a :class:`~kd_train.trainer.config.RunConfig`.

The student (a saved model or a ``transformers`` config), the teacher source, the loss
module and the tokenised datasets. Each builder is a few lines over the library that owns
the thing; the loop only sees their results.

``IGNORE_INDEX`` and ``Example`` are re-exported from :mod:`kd_train.data` for the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from kd_train.data import IGNORE_INDEX, Example, TokenizeConfig, encode_records, read_records
from kd_train.errors import KDTrainError
from kd_train.teachers.base import TopK
from kd_train.trainer.config import DataConfig, StudentConfig, TeacherConfig

__all__ = ["IGNORE_INDEX", "Example", "build_loss", "load_examples", "load_student", "load_teacher"]

#: ``teacher(input_ids, attention_mask)`` -> keyword arguments for the loss module.
TeacherFn = Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]


def load_student(cfg: StudentConfig, seed: int) -> tuple[torch.nn.Module, Any]:
    """Return ``(model, tokenizer)``: loaded from ``cfg.path`` or built from ``cfg.config``.

    A model built from a config is initialised under ``torch.manual_seed(seed)``, so the
    same seed gives the same initial weights.
    """
    if cfg.path is not None:
        _require_dir(cfg.path, "student.path")
        tokenizer = AutoTokenizer.from_pretrained(cfg.path)
        model = AutoModelForCausalLM.from_pretrained(cfg.path, dtype=torch.float32)
    else:
        assert cfg.config is not None
        assert cfg.tokenizer is not None
        _require_dir(cfg.tokenizer, "student.tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer)
        options = dict(cfg.config)
        hf_config = AutoConfig.for_model(options.pop("model_type"), **options)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_teacher(cfg: TeacherConfig, device: torch.device) -> TeacherFn | None:
    """Return the teacher as a function of a batch, or ``None`` for a CE-only run."""
    if cfg.kind == "none":
        return None
    assert cfg.path is not None  # checked by parse_config
    _require_dir(cfg.path, "teacher.path")
    if cfg.kind == "cached":
        raise KDTrainError(
            "teacher.kind 'cached' needs kd_train.teachers.CachedTeacher, which this build "
            "does not have yet; use teacher.kind 'hf'"
        )
    model = AutoModelForCausalLM.from_pretrained(cfg.path, dtype=torch.float32)
    model.to(device).eval()  # type: ignore[arg-type]
    k = cfg.topk

    @torch.no_grad()
    def teacher(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        if k is None:
            return {"teacher_logits": logits}
        logprobs, ids = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
        return {"teacher_topk": TopK(ids=ids, logprobs=logprobs)}

    return teacher


def load_examples(cfg: DataConfig, tokenizer: Any) -> tuple[list[Example], list[Example]]:
    """Read, validate and tokenise the train and eval splits (:mod:`kd_train.data`).

    Without ``data.eval`` the last ``eval_fraction`` of the train file is held out. Records
    longer than ``data.max_length`` have their completion cut (``truncation="truncate"``).
    """
    tok_cfg = TokenizeConfig(max_length=cfg.max_length, truncation="truncate")

    def encode(path: str) -> list[Example]:
        if not Path(path).is_file():
            raise KDTrainError(f"dataset {path} does not exist; check data.train / data.eval")
        return list(encode_records(read_records(path), tokenizer, tok_cfg))

    train = encode(cfg.train)
    if cfg.eval is not None:
        return train, encode(cfg.eval)
    n_eval = int(len(train) * cfg.eval_fraction)
    return train[: len(train) - n_eval], train[len(train) - n_eval :]


def _require_dir(path: str, key: str) -> None:
    if not Path(path).is_dir():
        raise KDTrainError(f"{key}: {path} is not a directory; give a saved model directory")


class LocalKDLoss(torch.nn.Module):
    r"""Stand-in for :mod:`kd_train.losses` until it lands: ``kd_weight·KD + ce_weight·CE``.

    ``KD = T² Σ_t KL(p_T(·|t) ‖ q_T(·|t)) / N`` over the ``N = num_items_in_batch`` label
    positions (dense teacher logits, or top-k renormalised over the k ids), and
    ``CE = Σ_t -log q(y_t) / N``. Inputs are aligned: logits ``[B, T, V]``, labels ``[B, T]``.
    """

    def __init__(self, kd_weight: float, ce_weight: float, temperature: float) -> None:
        super().__init__()
        self.kd_weight, self.ce_weight, self.temperature = kd_weight, ce_weight, temperature

    def forward(
        self,
        student_logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        teacher_topk: TopK | None = None,
        span_masks: dict[str, torch.Tensor] | None = None,
        step: int = 0,
        num_items_in_batch: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"ce", "kd" (with a teacher), "loss"}``, each a scalar tensor."""
        mask = labels != IGNORE_INDEX
        n = float(num_items_in_batch if num_items_in_batch is not None else mask.sum())
        logq = torch.log_softmax(student_logits.float(), dim=-1)
        ce = -(logq.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum() / n
        terms = {"ce": ce}
        t = self.temperature
        if teacher_logits is not None or teacher_topk is not None:
            logq_t = torch.log_softmax(student_logits.float() / t, dim=-1)
            if teacher_topk is not None:
                logq_t = logq_t.gather(-1, teacher_topk.ids)
                logq_t = logq_t - logq_t.logsumexp(-1, keepdim=True)
                logp = torch.log_softmax(teacher_topk.logprobs.float() / t, dim=-1)
            else:
                assert teacher_logits is not None
                logp = torch.log_softmax(teacher_logits.float() / t, dim=-1)
            kl = (logp.exp() * (logp - logq_t)).sum(-1)
            terms["kd"] = t * t * (kl * mask).sum() / n
        kd = terms.get("kd", torch.zeros(()))
        terms["loss"] = self.kd_weight * kd + self.ce_weight * ce
        return terms


def build_loss(options: dict[str, Any], has_teacher: bool) -> torch.nn.Module:
    """Build the loss module from the config's ``loss`` mapping."""
    allowed = {"kd_weight", "ce_weight", "temperature"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise KDTrainError(
            f"unknown key 'loss.{unknown[0]}'; allowed keys here: {', '.join(sorted(allowed))}"
        )
    kd_weight = float(options.get("kd_weight", 1.0 if has_teacher else 0.0))
    ce_weight = float(options.get("ce_weight", 0.0 if has_teacher else 1.0))
    return LocalKDLoss(kd_weight, ce_weight, float(options.get("temperature", 1.0)))
