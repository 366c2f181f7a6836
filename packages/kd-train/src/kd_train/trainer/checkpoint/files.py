"""The checkpoint directories of a run: save, verify, find the latest, load, keep the newest few.

Each checkpoint is ``RUN_DIR/checkpoints/step-NNNNNNNN/``, written whole by
:func:`kd_train.atomic.atomic_dir`: only complete checkpoints carry a ``step-NNNNNNNN``
name (the rename is the commit), and a save killed midway leaves a hidden directory that
:func:`~kd_train.trainer.checkpoint.latest_checkpoint` ignores and the next save removes.

A new checkpoint is verified (re-read, every hash checked, the state file schema-checked)
before it is renamed into place, and older checkpoints are pruned only after that. The
latest checkpoint that fails verification is never skipped silently: resuming stops and
names it, and the previous checkpoint that verifies (the user moves the bad one away).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save_file

from kd_train.atomic import atomic_dir
from kd_train.trainer.checkpoint.finite import ADVICE, NonFiniteError, first_non_finite
from kd_train.trainer.checkpoint.manifest import (
    CheckpointError,
    Manifest,
    read_manifest,
    read_verified,
    verify_files,
    write_manifest,
)
from kd_train.trainer.checkpoint.rng import capture_rng, restore_rng
from kd_train.trainer.checkpoint.state import (
    FullState,
    TrainState,
    gather_state,
    load_optimizer,
    load_weights,
    parse_trainer_state,
)

_STEP_DIR = re.compile(r"^step-(\d{8})$")
#: What a save killed midway leaves in ``checkpoints/``: the hidden directory of
#: :func:`kd_train.atomic.atomic_dir`, or the ``.tmp-step-*`` one older kd-train wrote.
_STALE = (".step-*.tmp", ".tmp-step-*")
_TRAINER_STATE = "trainer_state.json"


def save_checkpoint(
    run_dir: Path,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    keep: int = 2,
    fingerprints: dict[str, str | None] | None = None,
) -> Path:
    """Write a checkpoint of a single-process ``model`` and ``optimizer``; return its dir.

    :func:`~kd_train.trainer.checkpoint.gather_state` then :func:`write_checkpoint`.
    In a distributed run call those two yourself: every rank gathers, rank 0 writes.
    """
    full = gather_state(model, optimizer)
    return write_checkpoint(run_dir, state, full, config, keep, fingerprints)


def write_checkpoint(
    run_dir: Path,
    state: TrainState,
    full: FullState,
    config: dict[str, Any],
    keep: int = 2,
    fingerprints: dict[str, str | None] | None = None,
) -> Path:
    """Write a checkpoint of ``state`` and ``full`` atomically; keep the newest ``keep``.

    ``fingerprints`` (datasets, tokenizer, teacher; see
    :func:`kd_train.trainer.outputs.run_fingerprints`) go into the manifest for resume to
    compare. The checkpoint is verified before it takes its ``step-NNNNNNNN`` name, and the
    older ones are pruned only then. The same step saved again (e.g. the final save right
    after a periodic one) replaces the earlier checkpoint of that step.

    Raises:
        NonFiniteError: the weights or the optimiser state hold a NaN or an infinity;
            nothing is written and the older checkpoints stay.
    """
    for tensors, what in ((full.weights, "weights"), (full.optimizer, "optimiser state")):
        bad = first_non_finite(tensors)
        if bad is not None:
            raise NonFiniteError(
                f"step {state.step}: the {what} hold non-finite values ({bad}) after the "
                f"optimiser step; no checkpoint was written for it and the older ones are "
                f"kept; {ADVICE}"
            )
    trainer_state = {"state": asdict(state), "param_groups": full.param_groups}
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{state.step:08d}"
    with atomic_dir(final) as tmp:
        save_file(full.weights, str(tmp / "model.safetensors"), metadata=full.aliases or None)
        save_file(full.optimizer, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_rest = capture_rng()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        try:
            text = json.dumps({**trainer_state, "rng": rng_rest}, allow_nan=False)
        except ValueError:
            raise NonFiniteError(
                f"step {state.step}: the trainer state holds a non-finite number "
                f"(best_eval_loss={state.best_eval_loss}); no checkpoint was written; {ADVICE}"
            ) from None
        (tmp / _TRAINER_STATE).write_text(text, encoding="utf-8")
        write_manifest(tmp, state.step, config, fingerprints or {})  # last: it lists the files
        try:
            verify_checkpoint(tmp)  # read back before it may replace anything
        except CheckpointError as exc:
            raise CheckpointError(
                f"the checkpoint of step {state.step} did not verify after writing ({exc}); "
                "it was discarded and the older checkpoints are kept"
            ) from None
    _prune(root, keep)
    return final


def verify_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Check every file of ``ckpt`` against its manifest and schema; return the manifest.

    The manifest must list every state file with its size and SHA-256 (an empty or partial
    list is refused), the directory must hold nothing else, every file must match, and
    ``trainer_state.json`` must fit its schema.

    Raises:
        CheckpointError: one line naming the first missing, unlisted, truncated, corrupted
            or malformed file (and the field, for a state file that fails its schema).
    """
    manifest = verify_files(Path(ckpt))
    data = read_verified(Path(ckpt), _TRAINER_STATE, manifest)
    parse_trainer_state(data, Path(ckpt) / _TRAINER_STATE)
    return dict(manifest.model_dump(mode="json"))


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The ``step-NNNNNNNN`` directories of ``run_dir``, oldest step first (none verified)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Return the newest checkpoint dir of ``run_dir`` after verifying it; ``None`` if none.

    Only fully written checkpoints carry a ``step-NNNNNNNN`` name (the rename is the
    commit), so the highest such name is the latest.

    Raises:
        CheckpointError: the latest checkpoint fails :func:`verify_checkpoint`. There is no
            silent fall-back to an older one: the message names the bad checkpoint and the
            newest one that verifies, which the run resumes from once the bad one is moved
            out of ``checkpoints/``.
    """
    steps = checkpoint_dirs(run_dir)
    if not steps:
        return None
    try:
        verify_checkpoint(steps[-1])
    except CheckpointError as exc:
        previous = next((p for p in reversed(steps[:-1]) if _verifies(p)), None)
        advice = (
            f"the previous checkpoint {previous.name} verifies: move {steps[-1]} out of "
            f"{steps[-1].parent} to resume from it"
            if previous is not None
            else "no earlier checkpoint verifies: start the run again in a new output_dir"
        )
        raise CheckpointError(
            f"the latest checkpoint {steps[-1]} fails verification ({exc}); kd-train does not "
            f"fall back on its own: {advice}"
        ) from None
    return steps[-1]


def load_checkpoint(
    ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> TrainState:
    """Verify ``ckpt``, load its weights (and optimiser and RNG states); return the state.

    Only files the manifest lists are read, each after its size and SHA-256 are checked;
    the JSON state is parsed from the verified bytes. In a distributed run every rank calls
    this with its bare student (see :func:`~kd_train.trainer.checkpoint.gather_state`) and
    its optimiser.
    """
    # Every rank verifies and reads the files itself rather than rank 0 reading and
    # broadcasting (``broadcast_from_rank0``): a corrupted file then fails on every rank
    # before any collective, instead of leaving the other ranks waiting in a broadcast that
    # never comes; and DDP ranks read their replica the same way.
    ckpt = Path(ckpt)
    verify_checkpoint(ckpt)
    manifest = read_manifest(ckpt)
    saved = parse_trainer_state(
        read_verified(ckpt, _TRAINER_STATE, manifest), ckpt / _TRAINER_STATE
    )
    load_weights(ckpt / "model.safetensors", model)
    if optimizer is not None:
        # Read in place (memory-mapped) after verify_checkpoint hashed it: the optimiser state
        # is twice the weights, too big to hold as bytes next to its tensors.
        tensors = _read_safetensors(ckpt / "optimizer.safetensors")
        groups = [group.model_dump() for group in saved.param_groups]
        load_optimizer(tensors, groups, model, optimizer)
    restore_rng(_tensors(ckpt, "rng.safetensors", manifest), saved.rng.model_dump())
    return saved.state


def _tensors(ckpt: Path, name: str, manifest: Manifest) -> dict[str, torch.Tensor]:
    """The tensors of a small safetensors state file, from its verified bytes."""
    try:
        return load(read_verified(ckpt, name, manifest))
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"checkpoint file {ckpt / name} is not safetensors ({exc})") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint file {path} is not safetensors ({exc})") from None


def _verifies(ckpt: Path) -> bool:
    try:
        verify_checkpoint(ckpt)
    except CheckpointError:
        return False
    return True


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for pattern in _STALE:  # left by a process killed while saving
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
