"""Checkpoints: safetensors + JSON, a SHA-256 manifest, written atomically, verified on load.

A checkpoint is a directory ``RUN_DIR/checkpoints/step-NNNNNNNN/`` holding

``model.safetensors``
    the student's weights (``safetensors.torch.save_model``, shared tensors handled).
``optimizer.safetensors``
    every AdamW state tensor, keyed ``"<param index>.<name>"``.
``rng.safetensors``
    the torch CPU (and CUDA) generator states and NumPy's Mersenne Twister keys.
``trainer_state.json``
    :class:`TrainState` (step, data cursor, early-stopping counters), the optimiser's
    ``param_groups`` and the rest of the Python / NumPy RNG states.
``manifest.json``
    ``{"format", "step", "files": {name: {"sha256", "bytes"}}, "config"}``.

Saving writes everything into a hidden sibling directory, writes the manifest last, then
renames the directory into place, so a process killed while saving leaves the previous
checkpoint untouched (the half-written ``.tmp-*`` directory is ignored and removed later).
Loading verifies every hash before reading a byte of state and never unpickles anything.
The learning-rate schedule is a pure function of the step (see
:func:`kd_train.trainer.loop.lr_at`), so the step is the scheduler's whole state.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from kd_train.atomic import atomic_write_text, fsync_dir
from kd_train.errors import KDTrainError

#: Version of the checkpoint layout, written as ``"format"`` in the manifest.
CHECKPOINT_FORMAT = 1
STATE_FILES = (
    "model.safetensors",
    "optimizer.safetensors",
    "rng.safetensors",
    "trainer_state.json",
)
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(KDTrainError):
    """A checkpoint is missing, corrupted or truncated; the message names the file."""


@dataclass
class TrainState:
    """Where the loop is: the optimiser step and the data cursor ``(epoch, index)``.

    ``index`` counts the micro-batches already consumed in ``epoch``; the data order of an
    epoch is a pure function of ``(seed, epoch)``, so the cursor is all resume needs.
    """

    step: int = 0
    epoch: int = 0
    index: int = 0
    tokens_seen: int = 0
    best_eval_loss: float | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False


def save_checkpoint(
    run_dir: Path,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint of ``state`` atomically; keep the newest ``keep``; return its dir."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:08d}"
    tmp = root / f".tmp-step-{state.step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    save_model(model, str(tmp / "model.safetensors"))
    opt_tensors, param_groups = _flatten_optimizer(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_rest = _capture_rng()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    trainer_state = {"state": asdict(state), "param_groups": param_groups, "rng": rng_rest}
    atomic_write_text(tmp / "trainer_state.json", json.dumps(trainer_state))
    for name in STATE_FILES:
        _fsync_file(tmp / name)
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "step": state.step,
        "files": {name: _describe(tmp / name) for name in STATE_FILES},
        "config": config,
    }
    atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2))

    if final.exists():  # the same step saved again (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
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


def verify_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Check every file of ``ckpt`` against its manifest; return the manifest.

    Raises:
        CheckpointError: naming the first missing, truncated or corrupted file.
    """
    manifest_path = Path(ckpt) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"checkpoint {ckpt} has no manifest.json; it is not a kd-train checkpoint"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint manifest {manifest_path} is corrupted ({exc}); "
            "delete this checkpoint directory to resume from the previous one"
        ) from exc
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {ckpt} has format {manifest.get('format')!r}; this kd-train reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    for name, expected in manifest["files"].items():
        path = Path(ckpt) / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing")
        found = _describe(path)
        if found["bytes"] != expected["bytes"]:
            raise CheckpointError(
                f"checkpoint file {path} is truncated or resized: {found['bytes']} bytes, "
                f"manifest says {expected['bytes']}; delete {ckpt} to resume from the "
                "previous checkpoint"
            )
        if found["sha256"] != expected["sha256"]:
            raise CheckpointError(
                f"checkpoint file {path} is corrupted: SHA-256 {found['sha256'][:16]}... does "
                f"not match the manifest's {expected['sha256'][:16]}...; delete {ckpt} to "
                "resume from the previous checkpoint"
            )
    return dict(manifest)


def load_checkpoint(
    ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> TrainState:
    """Verify ``ckpt``, load its weights (and optimiser and RNG states); return the state."""
    verify_checkpoint(ckpt)
    ckpt = Path(ckpt)
    try:
        missing, unexpected = load_model(model, str(ckpt / "model.safetensors"), strict=False)
    except RuntimeError as exc:  # shape mismatches
        missing, unexpected = [str(exc).splitlines()[1].strip()], []
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint file {ckpt / 'model.safetensors'} does not fit the student: "
            f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}; "
            "resume with the run's own config"
        )
    saved = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    if optimizer is not None:
        tensors = load_file(str(ckpt / "optimizer.safetensors"))
        optimizer.load_state_dict(_unflatten_optimizer(tensors, saved["param_groups"]))
    _restore_rng(load_file(str(ckpt / "rng.safetensors")), saved["rng"])
    return TrainState(**saved["state"])


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # left by a process killed while saving
        shutil.rmtree(stale, ignore_errors=True)


def _flatten_optimizer(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, slots in sd["state"].items():
        for name, value in slots.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{index}.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _unflatten_optimizer(
    tensors: dict[str, torch.Tensor], param_groups: list[dict[str, Any]]
) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in param_groups
    ]
    return {"state": state, "param_groups": groups}


def _capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state: Any = np.random.get_state()
    tensors = {
        "torch_cpu": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
    }
    if torch.cuda.is_available():  # pragma: no cover - CPU-only CI
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    rest = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, rest


def _restore_rng(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():  # pragma: no cover - CPU-only CI
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    name, pos, has_gauss, cached = rest["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    version, internal, gauss = rest["python"]
    random.setstate((version, tuple(internal), gauss))
