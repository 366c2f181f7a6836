"""Build what the loop needs from a :class:`~kd_train.trainer.config.RunConfig`.

The student (a saved model or a ``transformers`` config), the teacher source, the loss
module and the tokenised datasets. Each builder is a few lines over the library that owns
the thing; the loop only sees their results.

``IGNORE_INDEX`` and ``Example`` are re-exported from :mod:`kd_train.data` for the loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from kd_train.data import IGNORE_INDEX, Example, TokenizeConfig, encode_records, read_records
from kd_train.errors import KDTrainError
from kd_train.losses.combined import DistillationLoss
from kd_train.losses.config import LossConfig
from kd_train.teachers.base import TopK
from kd_train.teachers.cached import CachedTeacher, CacheError, CacheMismatchError
from kd_train.teachers.fingerprint import dataset_fingerprint, tokenizer_fingerprint
from kd_train.teachers.hf import HFTeacher
from kd_train.trainer.config import DataConfig, StudentConfig, TeacherConfig

__all__ = [
    "IGNORE_INDEX",
    "Example",
    "build_loss",
    "load_examples",
    "load_student",
    "load_teacher",
    "loss_config",
]

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


def load_teacher(
    cfg: TeacherConfig, device: torch.device, tokenizer: Any, data: DataConfig
) -> tuple[TeacherFn | None, TeacherFn | None]:
    """Return the teacher of train batches and the teacher of eval batches (``None``: CE only).

    ``hf`` runs :class:`~kd_train.teachers.hf.HFTeacher` in the loop (dense logits, or top-k
    when ``teacher.topk`` is set) for both. ``cached`` reads top-k (with tail) from
    ``teacher.path``, a cache made by ``kd-train cache-logits`` for ``data.train`` with this
    tokenizer (:class:`~kd_train.teachers.cached.CachedTeacher`; its fingerprints are
    checked). Eval batches held out of ``data.train`` (``data.eval_fraction``) are in that
    cache too; a separate ``data.eval`` file is served by ``teacher.eval_path``, a cache of
    ``data.eval`` made by the same teacher, read with the same ``k``.
    """
    if cfg.kind == "none":
        return None, None
    assert cfg.path is not None  # checked by parse_config
    if cfg.kind == "cached":
        train_cache = _open_cache(cfg.path, tokenizer, data.train, "teacher.path")
        k = cfg.topk or train_cache.k
        if cfg.eval_path is None or data.eval is None:  # parse_config sets both or neither
            served = _CachedTeacherFn(train_cache, k, device)
            return served, served
        eval_cache = _open_cache(cfg.eval_path, tokenizer, data.eval, "teacher.eval_path")
        _require_same_teacher(train_cache, eval_cache, k)
        return _CachedTeacherFn(train_cache, k, device), _CachedTeacherFn(eval_cache, k, device)
    _require_dir(cfg.path, "teacher.path")
    live = HFTeacher.from_pretrained(cfg.path, device=str(device))
    k_live = cfg.topk

    def hf(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        if k_live is None:
            return {"teacher_logits": live.logits(input_ids, attention_mask)}
        return {"teacher_topk": live.topk(input_ids, attention_mask, k_live)}

    return hf, hf


def _open_cache(path: str, tokenizer: Any, dataset: str, key: str) -> CachedTeacher:
    """Open the cache at ``path`` (config key ``key``), checked against ``dataset``."""
    if not Path(dataset).is_file():
        raise KDTrainError(f"dataset {dataset} does not exist; check data.train / data.eval")
    try:
        return CachedTeacher.open(
            path,
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            dataset_fingerprint=dataset_fingerprint(dataset),
        )
    except CacheError as exc:
        raise type(exc)(f"{key}: {exc}") from exc


def _require_same_teacher(train: CachedTeacher, eval_: CachedTeacher, k: int) -> None:
    """The eval cache must come from the train cache's teacher and hold at least ``k``."""
    ours, theirs = train.manifest.config, eval_.manifest.config
    if ours.teacher_fingerprint != theirs.teacher_fingerprint:
        raise CacheMismatchError(
            f"teacher.eval_path {eval_.directory} was made by another teacher than "
            f"teacher.path {train.directory} (teacher fingerprints {theirs.teacher_fingerprint} "
            f"and {ours.teacher_fingerprint}); build both caches with the same --teacher"
        )
    if eval_.k < k:
        raise CacheMismatchError(
            f"teacher.eval_path {eval_.directory} holds top-{eval_.k}, but training reads "
            f"top-{k}; set teacher.topk to at most {eval_.k} or rebuild it with --k {k}"
        )


class _CachedTeacherFn:
    """Serve a cache's top-``k`` (with tail) for a batch, on ``device``; keeps the cache."""

    def __init__(self, cache: CachedTeacher, k: int, device: torch.device) -> None:
        self.cache, self.k, self.device = cache, k, device

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        top = self.cache.topk(input_ids.cpu(), attention_mask.cpu(), self.k)
        return {"teacher_topk": _map_tensors(top, lambda t: t.to(self.device))}


def require_cache_covers(
    teacher: TeacherFn | None, examples: list[Example], split: str, max_length: int
) -> None:
    """Check before training that a cached teacher has rows for every position of ``examples``.

    Each example's token sequence must be in the cache whole: a cache tokenized with other
    ``bos``/``eos``/``max_length`` settings either misses the sequence (the run would stop
    at that batch) or holds a shorter one, whose missing positions would be trained towards
    placeholder rows. No-op for a live teacher or none.

    Raises:
        CacheMismatchError: naming the split, how many examples are not covered, the first
            one, and both tokenization settings.
    """
    if not isinstance(teacher, _CachedTeacherFn):
        return
    cache = teacher.cache
    uncovered = [example for example in examples if not cache.holds(example.input_ids)]
    if uncovered:
        first, cfg = uncovered[0], cache.manifest.config
        raise CacheMismatchError(
            f"{len(uncovered)} of {len(examples)} {split} examples have no teacher rows for "
            f"all their tokens in cache {cache.directory} (first: record {first.record_id!r}, "
            f"{first.input_ids.numel()} tokens). The cache was tokenized with max_length="
            f"{cfg.max_length}, add_bos={cfg.add_bos}, add_eos={cfg.add_eos}; training uses "
            f"data.max_length={max_length} with bos and eos: rebuild the cache with "
            f"'kd-train cache-logits --max-length {max_length}' or set data.max_length to "
            f"{cfg.max_length}"
        )


def _map_tensors(top: TopK, fn: Callable[[torch.Tensor], torch.Tensor]) -> TopK:
    """Apply ``fn`` to every tensor field of a :class:`TopK` (or subclass, e.g. with tail)."""
    return dataclasses.replace(
        top, **{f.name: fn(getattr(top, f.name)) for f in dataclasses.fields(top)}
    )


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


def build_loss(options: dict[str, Any], has_teacher: bool) -> DistillationLoss:
    """Build :class:`~kd_train.losses.combined.DistillationLoss` from the config's ``loss`` mapping.

    Without ``loss.weights`` a run with a teacher optimises ``kd`` and a CE-only run
    (``teacher.kind: none``) optimises ``ce``.
    """
    return DistillationLoss(loss_config(options, has_teacher))


def loss_config(options: dict[str, Any], has_teacher: bool) -> LossConfig:
    """Validate the ``loss`` mapping (errors name ``loss.<key>``) with the trainer's defaults."""
    if "weights" not in options:
        options = {**options, "weights": {"kd": 1.0} if has_teacher else {"ce": 1.0}}
    return LossConfig.from_dict(options)
