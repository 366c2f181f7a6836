"""The checkpoint directories of a run: save, find the latest, load, keep the newest few.

Each checkpoint is ``RUN_DIR/checkpoints/step-NNNNNNNN/``, written whole by
:func:`kd_train.atomic.atomic_dir`: only complete checkpoints carry a ``step-NNNNNNNN``
name (the rename is the commit), and a save killed midway leaves a hidden directory that
:func:`~kd_train.trainer.checkpoint.latest_checkpoint` ignores and the next save removes.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kd_train.atomic import atomic_dir
from kd_train.trainer.checkpoint.manifest import verify_checkpoint, write_manifest
from kd_train.trainer.checkpoint.rng import capture_rng, restore_rng
from kd_train.trainer.checkpoint.state import (
    FullState,
    TrainState,
    gather_state,
    load_optimizer,
    load_weights,
)

_STEP_DIR = re.compile(r"^step-(\d{8})$")
#: What a save killed midway leaves in ``checkpoints/``: the hidden directory of
#: :func:`kd_train.atomic.atomic_dir`, or the ``.tmp-step-*`` one older kd-train wrote.
_STALE = (".step-*.tmp", ".tmp-step-*")


def save_checkpoint(
    run_dir: Path,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint of a single-process ``model`` and ``optimizer``; return its dir.

    :func:`~kd_train.trainer.checkpoint.gather_state` then :func:`write_checkpoint`.
    In a distributed run call those two yourself: every rank gathers, rank 0 writes.
    """
    return write_checkpoint(run_dir, state, gather_state(model, optimizer), config, keep)


def write_checkpoint(
    run_dir: Path, state: TrainState, full: FullState, config: dict[str, Any], keep: int = 2
) -> Path:
    """Write a checkpoint of ``state`` and ``full`` atomically; keep the newest ``keep``.

    The same step saved again (e.g. the final save right after a periodic one) replaces
    the earlier checkpoint of that step.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{state.step:08d}"
    with atomic_dir(final) as tmp:
        save_file(full.weights, str(tmp / "model.safetensors"), metadata=full.aliases or None)
        save_file(full.optimizer, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_rest = capture_rng()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        trainer_state = {"state": asdict(state), "param_groups": full.param_groups, "rng": rng_rest}
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state), encoding="utf-8")
        write_manifest(tmp, state.step, config)  # last: it describes the files above
    _prune(root, keep)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Return the newest complete checkpoint dir of ``run_dir``, or ``None`` if there is none.

    Only fully written checkpoints carry a ``step-NNNNNNNN`` name (the rename is the
    commit), so the highest such name is the latest.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    steps = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))
    return steps[-1] if steps else None


def load_checkpoint(
    ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> TrainState:
    """Verify ``ckpt``, load its weights (and optimiser and RNG states); return the state.

    In a distributed run every rank calls this with its bare student (see
    :func:`~kd_train.trainer.checkpoint.gather_state`) and its optimiser.
    """
    # Every rank verifies and reads the files itself rather than rank 0 reading and
    # broadcasting (``broadcast_from_rank0``): a corrupted file then fails on every rank
    # before any collective, instead of leaving the other ranks waiting in a broadcast that
    # never comes; and DDP ranks read their replica the same way.
    verify_checkpoint(ckpt)
    ckpt = Path(ckpt)
    load_weights(ckpt / "model.safetensors", model)
    saved = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    if optimizer is not None:
        tensors = load_file(str(ckpt / "optimizer.safetensors"))
        load_optimizer(tensors, saved["param_groups"], model, optimizer)
    restore_rng(load_file(str(ckpt / "rng.safetensors")), saved["rng"])
    return TrainState(**saved["state"])


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for pattern in _STALE:  # left by a process killed while saving
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
