"""What a finished run leaves behind: the student model directory and the run manifest.

``RUN_DIR/student/`` is a ``transformers`` model directory (``save_pretrained`` of the
model and the tokenizer), loadable with ``AutoModelForCausalLM.from_pretrained``; a QAT
student adds ``quantization.json`` (its float weights are saved; see
:mod:`kd_train.trainer.qat`). It is
written into a hidden sibling first and renamed into place, so it is complete or absent.

``RUN_DIR/run_manifest.json`` records the run config, SHA-256 fingerprints of the
datasets and of the tokenizer, the fingerprints checkpoints store (:func:`run_fingerprints`),
the config changes accepted on resume (``allowed_changes``, from ``kd-train resume
--allow-change``), the installed package versions, the final train state and the git commit
of the working directory when there is one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from kd_train.atomic import atomic_dir, atomic_write_text
from kd_train.provenance import git_commit, installed_versions
from kd_train.teachers import fingerprint
from kd_train.teachers.cached import MANIFEST as CACHE_MANIFEST
from kd_train.trainer import lora, qat
from kd_train.trainer.checkpoint import TrainState, sha256_file
from kd_train.trainer.config import RunConfig


def save_student(
    model: torch.nn.Module,
    tokenizer: Any,
    out: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    quantization: dict[str, Any] | None = None,
) -> Path:
    """``save_pretrained`` the model and tokenizer into ``out``, atomically (dir rename).

    An existing ``out`` is replaced whole (:func:`kd_train.atomic.atomic_dir`).
    ``state_dict`` replaces the model's own tensors: the whole weights gathered from an
    FSDP-sharded student (:func:`kd_train.trainer.checkpoint.gather_state`).
    ``quantization`` is the record of a QAT student, written as ``quantization.json``
    (:func:`kd_train.trainer.qat.quantization_record`).
    """
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)  # type: ignore[operator]
        tokenizer.save_pretrained(tmp)
        if quantization is not None:
            qat.write_quantization(tmp, quantization)
    return Path(out)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's canonical JSON (vocabulary, merges, specials, normaliser)."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_fingerprints(config: RunConfig, tokenizer: Any) -> dict[str, str | None]:
    """What a run reads besides its config, fingerprinted; checkpoints store it for resume.

    ``data.train`` and ``data.eval`` (the files' bytes), ``tokenizer`` (the student's, by
    :func:`kd_train.teachers.fingerprint.tokenizer_fingerprint`) and ``teacher``: an ``hf``
    teacher's weight files, a ``cached`` teacher's cache manifest (which holds the SHA-256
    of every shard) and ``teacher.eval_path``'s. A ``records`` teacher is part of the
    dataset; an ``http`` endpoint cannot be fingerprinted (its ``base_url`` and ``model``
    are in the config), so ``teacher`` is ``None`` for those and for ``none``. With
    ``loss.cross_tokenizer`` the ``hf`` teacher's own tokenizer is ``teacher.tokenizer``. A
    LoRA run adds ``student``: the base model's weight files
    (:func:`kd_train.trainer.lora.base_fingerprint`).
    """
    found: dict[str, str | None] = {
        "data.train": fingerprint.dataset_fingerprint(config.data.train)
    }
    if config.data.eval is not None:
        found["data.eval"] = fingerprint.dataset_fingerprint(config.data.eval)
    found["tokenizer"] = fingerprint.tokenizer_fingerprint(tokenizer)
    if config.student.lora is not None:  # a LoRA run resumes on the same base only
        found["student"] = lora.base_fingerprint(config.student)
    teacher = config.teacher
    found["teacher"] = None
    if teacher.kind == "hf" and teacher.path is not None:
        found["teacher"] = fingerprint.weights_fingerprint(teacher.path)
        if config.loss.cross_tokenizer is not None:  # its own tokenizer decides its tokens
            found["teacher.tokenizer"] = fingerprint.tokenizer_files_fingerprint(teacher.path)
    if teacher.tokenizer is not None:  # an http teacher's own tokenizer (cross-tokenizer)
        found["teacher.tokenizer"] = fingerprint.tokenizer_files_fingerprint(teacher.tokenizer)
    if teacher.kind == "cached" and teacher.path is not None:
        found["teacher"] = fingerprint.dataset_fingerprint(Path(teacher.path) / CACHE_MANIFEST)
        if teacher.eval_path is not None:
            cache = Path(teacher.eval_path) / CACHE_MANIFEST
            found["teacher.eval_path"] = fingerprint.dataset_fingerprint(cache)
    return found


def write_run_manifest(
    run_dir: Path,
    config: RunConfig,
    state: TrainState,
    tokenizer: Any,
    replica_sha256: list[str] | None = None,
    held_out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``run_dir/run_manifest.json`` atomically and return its content.

    ``replica_sha256`` holds the SHA-256 of every rank's final weights (one entry per
    process; all equal in a healthy run; see
    :func:`kd_train.trainer.distributed.replica_digests` for what they show under FSDP).
    ``held_out`` is the content check of the eval split against training
    (:meth:`kd_train.data.holdout.OverlapReport.to_dict`: examples checked, overlapping,
    dropped, the first pairs), stored under ``"held_out"``.
    """
    datasets = {"train": config.data.train}
    if config.data.eval is not None:
        datasets["eval"] = config.data.eval
    manifest = {
        "config": config.to_dict(),
        "datasets": {k: {"path": p, "sha256": sha256_file(Path(p))} for k, p in datasets.items()},
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
        "packages": installed_versions(),
        "git_commit": git_commit(Path.cwd()),
        "state": dataclasses.asdict(state),
        "allowed_changes": [dataclasses.asdict(change) for change in state.changes],
        "replica_sha256": replica_sha256 or [],
        "held_out": held_out,
    }
    atomic_write_text(Path(run_dir) / "run_manifest.json", json.dumps(manifest, indent=2))
    return manifest
