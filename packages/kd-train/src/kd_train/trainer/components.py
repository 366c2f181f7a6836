"""Build what the loop needs from a :class:`~kd_train.trainer.config.RunConfig`.

The student (a saved model or a ``transformers`` config), the teacher source, the loss
module and the tokenised datasets. Each builder is a few lines over the library that owns
the thing; the loop only sees their results.

``IGNORE_INDEX`` and ``Example`` are re-exported from :mod:`kd_train.data` for the loop.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from kd_train.data import IGNORE_INDEX, Example, TokenizeConfig, encode_records, read_records
from kd_train.data.holdout import OverlapReport, drop_overlap, refuse_overlap
from kd_train.data.schema import SPAN_KINDS
from kd_train.errors import KDTrainError
from kd_train.losses.combined import DistillationLoss
from kd_train.losses.config import LossConfig
from kd_train.store import open_store, sqlite_url
from kd_train.teachers.base import Teacher
from kd_train.teachers.cached import CachedTeacher, CacheError, CacheMismatchError
from kd_train.teachers.fingerprint import dataset_fingerprint, tokenizer_fingerprint
from kd_train.teachers.hf import HFTeacher
from kd_train.teachers.http import HTTPTeacher
from kd_train.teachers.records import RecordsTeacher
from kd_train.teachers.tokens import load_tokenizer, model_location
from kd_train.trainer import lora
from kd_train.trainer.config import DataConfig, HTTPSettings, StudentConfig, TeacherConfig

__all__ = [
    "IGNORE_INDEX",
    "Example",
    "Splits",
    "build_loss",
    "load_examples",
    "load_splits",
    "load_student",
    "load_teacher",
    "require_teacher_serves",
]

logger = logging.getLogger(__name__)


def load_student(cfg: StudentConfig, seed: int) -> tuple[torch.nn.Module, Any]:
    """Return ``(model, tokenizer)``: loaded from ``cfg.path`` or built from ``cfg.config``.

    A model built from a config is initialised under ``torch.manual_seed(seed)``, so the
    same seed gives the same initial weights. With ``student.lora`` the model holds LoRA
    adapters and only they train (:func:`kd_train.trainer.lora.add_adapters`).
    """
    if cfg.path is not None:
        directory, gguf_file = _require_model(cfg.path, "student.path")
        with _loading("student.path", cfg.path):
            tokenizer = load_tokenizer(cfg.path)
            model = AutoModelForCausalLM.from_pretrained(
                directory, dtype=torch.float32, gguf_file=gguf_file, local_files_only=True
            )
    else:
        if cfg.config is None or cfg.tokenizer is None:  # parse_config refuses this already
            raise KDTrainError("student: give student.path, or student.config and .tokenizer")
        _require_model(cfg.tokenizer, "student.tokenizer")
        with _loading("student.tokenizer", cfg.tokenizer):
            tokenizer = load_tokenizer(cfg.tokenizer)
        options = dict(cfg.config)
        hf_config = AutoConfig.for_model(options.pop("model_type"), **options)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.lora is not None:  # after the init: adapters draw from the seeded generator too
        lora.add_adapters(model, cfg.lora)  # in place: the same transformers model
    return model, tokenizer


def load_teacher(
    cfg: TeacherConfig,
    device: torch.device,
    tokenizer: Any,
    data: DataConfig,
    *,
    run_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    layers: bool = False,
) -> tuple[Teacher | None, Teacher | None]:
    """Open ``teacher.kind``; return the teacher of train batches and of eval batches.

    ``None`` for a CE-only run. ``hf`` runs :class:`~kd_train.teachers.hf.HFTeacher` in the
    loop (hidden states + ``lm_head``, or top-k with ``teacher.topk``; with ``layers`` also
    every layer's hidden states). ``cached`` reads top-k (with tail) from ``teacher.path``,
    a cache made by ``kd-train cache-logits`` for ``data.train`` with this tokenizer
    (:class:`~kd_train.teachers.cached.CachedTeacher`; its fingerprints are checked). Eval
    batches held out of ``data.train`` (``data.eval_fraction``) are in that cache too; a
    separate ``data.eval`` file is served by ``teacher.eval_path``, a cache of ``data.eval``
    made by the same teacher, read with the same ``k``. ``records`` serves the top-k stored
    in the records (:class:`~kd_train.teachers.records.RecordsTeacher`). ``http`` scores
    every batch at a live endpoint (:class:`~kd_train.teachers.http.HTTPTeacher`), with
    its response cache and budget in ``teacher.http.store`` (default: an SQLite file in the
    run directory), its tokens checked against this tokenizer and its API key read from
    ``environ`` (the variable ``teacher.http.api_key_env`` names).
    """
    if cfg.kind == "none":
        return None, None
    if cfg.kind == "records":
        records = RecordsTeacher(len(tokenizer))
        return records, records
    if cfg.kind == "http":
        if cfg.http is None or cfg.topk is None:  # parse_config refuses this already
            raise KDTrainError("teacher.kind 'http' needs teacher.http and teacher.topk")
        own = tokenizer  # a cross-tokenizer endpoint reads the endpoint model's tokenizer
        if cfg.tokenizer is not None:
            _require_model(cfg.tokenizer, "teacher.tokenizer")
            with _loading("teacher.tokenizer", cfg.tokenizer):
                own = load_tokenizer(cfg.tokenizer)
        live_http = open_http_teacher(cfg.http, cfg.topk, own, run_dir, environ or {})
        return live_http, live_http
    if cfg.path is None:  # parse_config refuses this already
        raise KDTrainError(f"teacher.path is required when teacher.kind is {cfg.kind!r}")
    if cfg.kind == "cached":
        train_cache = _open_cache(cfg.path, tokenizer, data.train, "teacher.path", cfg.topk)
        if cfg.eval_path is None or data.eval is None:  # parse_config sets both or neither
            return train_cache, train_cache
        eval_cache = _open_cache(
            cfg.eval_path, tokenizer, data.eval, "teacher.eval_path", train_cache.serve_k
        )
        _require_same_teacher(train_cache, eval_cache)
        return train_cache, eval_cache
    _require_model(cfg.path, "teacher.path")
    live = HFTeacher.from_pretrained(cfg.path, device=str(device), k=cfg.topk, layers=layers)
    return live, live


def open_http_teacher(
    settings: HTTPSettings,
    k: int,
    tokenizer: Any,
    run_dir: Path | None,
    environ: Mapping[str, str],
) -> HTTPTeacher:
    """The ``http`` teacher: endpoint, API key from ``environ``, store, top-``k``.

    The store defaults to ``kd-store.sqlite`` in ``run_dir``.
    """
    store_url = settings.store
    if store_url is None:
        if run_dir is None:
            raise KDTrainError("teacher.http.store is required when no run directory is given")
        run_dir.mkdir(parents=True, exist_ok=True)
        store_url = sqlite_url(run_dir / "kd-store.sqlite")
    api_key = environ.get(settings.api_key_env) if settings.api_key_env else None
    if settings.api_key_env and not api_key:
        raise KDTrainError(
            f"teacher.http.api_key_env names {settings.api_key_env}, which is not set; export "
            "it, or remove api_key_env for an endpoint without a key"
        )
    endpoint = dataclasses.replace(settings.endpoint, top_logprobs=k)
    return HTTPTeacher(
        endpoint,
        api_key=api_key,
        store=open_store(store_url),
        tokenizer=tokenizer,
        owner="kd-train distill",
    )


def _open_cache(path: str, tokenizer: Any, dataset: str, key: str, k: int | None) -> CachedTeacher:
    """Open the cache at ``path`` (config key ``key``), checked against ``dataset``."""
    if not Path(dataset).is_file():
        raise KDTrainError(f"dataset {dataset} does not exist; check data.train / data.eval")
    try:
        return CachedTeacher.open(
            path,
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            dataset_fingerprint=dataset_fingerprint(dataset),
            k=k,
        )
    except CacheError as exc:
        raise type(exc)(f"{key}: {exc}") from exc


def _require_same_teacher(train: CachedTeacher, eval_: CachedTeacher) -> None:
    """The eval cache must come from the train cache's teacher."""
    ours, theirs = train.manifest.config, eval_.manifest.config
    if ours.teacher_fingerprint != theirs.teacher_fingerprint:
        raise CacheMismatchError(
            f"teacher.eval_path {eval_.directory} was made by another teacher than "
            f"teacher.path {train.directory} (teacher fingerprints {theirs.teacher_fingerprint} "
            f"and {ours.teacher_fingerprint}); build both caches with the same --teacher"
        )


def require_cache_covers(
    teacher: Teacher | None, examples: list[Example], split: str, max_length: int
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
    if not isinstance(teacher, CachedTeacher):
        return
    cache = teacher
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


@dataclasses.dataclass(frozen=True)
class Splits:
    """The tokenised train and eval examples, and what the held-out check found.

    Attributes:
        train: the training examples.
        eval: the evaluation examples, none of which repeats a training token sequence.
        overlap: the content check of ``eval`` against ``train``
            (:class:`~kd_train.data.holdout.OverlapReport`; the run manifest records it).
    """

    train: list[Example]
    eval: list[Example]
    overlap: OverlapReport


def load_splits(cfg: DataConfig, tokenizer: Any) -> Splits:
    """Read, validate and tokenise the train and eval splits (:mod:`kd_train.data`).

    Without ``data.eval`` the last ``eval_fraction`` of the train file is held out, minus
    the examples whose token sequence is also in the training part (dropped, counted in
    ``overlap`` and logged). A separate ``data.eval`` file that repeats a training token
    sequence is refused (:mod:`kd_train.data.holdout`). Records longer than
    ``data.max_length`` have their completion cut (``truncation="truncate"``).

    Raises:
        kd_train.data.holdout.HeldOutOverlapError: ``data.eval`` repeats training examples.
        kd_train.errors.KDTrainError: a file is missing, or a row is invalid.
    """
    tok_cfg = TokenizeConfig(max_length=cfg.max_length, truncation="truncate")

    def encode(path: str) -> list[Example]:
        if not Path(path).is_file():
            raise KDTrainError(f"dataset {path} does not exist; check data.train / data.eval")
        return list(encode_records(read_records(path), tokenizer, tok_cfg))

    train = encode(cfg.train)
    if cfg.eval is not None:
        held = encode(cfg.eval)
        return Splits(train, held, refuse_overlap(train, held, source=f"data.eval {cfg.eval}"))
    n_eval = int(len(train) * cfg.eval_fraction)
    train, held = train[: len(train) - n_eval], train[len(train) - n_eval :]
    kept, report = drop_overlap(train, held)
    if report.dropped:
        logger.warning("data.eval_fraction: %s; dropped them from eval", report.describe())
    return Splits(train, kept, report)


def load_examples(cfg: DataConfig, tokenizer: Any) -> tuple[list[Example], list[Example]]:
    """``(train, eval)`` of :func:`load_splits` (its held-out report left out)."""
    splits = load_splits(cfg, tokenizer)
    return splits.train, splits.eval


@contextmanager
def _loading(key: str, path: str) -> Iterator[None]:
    """Turn what ``transformers`` raises on a path with no loadable model into one line.

    A directory of something else, or a damaged file, names ``key`` and ``path``.
    """
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KDTrainError(
            f"{key}: cannot load a model or tokenizer from {path!r} ({first}); give a directory "
            "written by save_pretrained or the model's .gguf file"
        ) from exc


def _require_model(path: str, key: str) -> tuple[Path, str | None]:
    """``(directory, gguf_file)`` of a saved model directory or a model's ``.gguf`` file."""
    directory, gguf_file = model_location(path)
    if not (Path(path).is_file() if gguf_file is not None else directory.is_dir()):
        raise KDTrainError(
            f"{key}: {path} is neither a directory nor a .gguf file; give a saved model "
            "directory (save_pretrained) or the model's GGUF file"
        )
    return directory, gguf_file


def build_loss(config: LossConfig, student: Any, teacher: Teacher | None) -> DistillationLoss:
    """Build :class:`~kd_train.losses.combined.DistillationLoss`; hidden sizes from the models."""
    student_dim = teacher_dim = None
    if config.hidden is not None:
        student_dim = int(student.config.hidden_size)
        if isinstance(teacher, HFTeacher):
            teacher_dim = int(teacher.model.config.hidden_size)
    return DistillationLoss(config, student_dim=student_dim, teacher_dim=teacher_dim)


#: The terms that read span labels, and the span kind each reads.
SPAN_TERMS = {f"span_{kind}": kind for kind in SPAN_KINDS} | {"code_pref": "code_mode"}


def require_teacher_serves(
    config: LossConfig, teacher: Teacher | None, examples: list[Example], split: str
) -> None:
    """Refuse before step 0 a dataset that cannot feed the configured terms.

    ``records``: every example must carry stored top-k. Span and code-mode weights need
    at least one example with a span of their kind.

    Raises:
        kd_train.errors.KDTrainError: naming the split, the first offending record and
            what would work.
    """
    if isinstance(teacher, RecordsTeacher):
        missing = [e for e in examples if e.teacher_ids is None]
        if missing:
            raise KDTrainError(
                f"teacher.kind 'records': {len(missing)} of {len(examples)} {split} records "
                f"have no teacher_topk (first: {missing[0].record_id!r}); make the dataset "
                "with 'kd-train generate' and top_logprobs > 0, or use teacher.kind 'hf', "
                "'cached' or 'http'"
            )
    if split != "train":  # span labels are checked where they are learned
        return
    for name in sorted(config.active_terms() & SPAN_TERMS.keys()):
        kind = SPAN_TERMS[name]
        if not any(bool(e.span_masks[kind].any()) for e in examples):
            raise KDTrainError(
                f"loss.weights.{name} is set but no {split} record has a {kind!r} span, so "
                f"the term would always be 0; label spans of kind {kind!r} in the records "
                f"(see the data guide) or remove loss.weights.{name}"
            )
