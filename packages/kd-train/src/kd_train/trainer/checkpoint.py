"""Checkpoints: safetensors + JSON, a SHA-256 manifest, written atomically, verified on load.

A checkpoint is a directory ``RUN_DIR/checkpoints/step-NNNNNNNN/`` holding

``model.safetensors``
    the student's full weights. Tied parameters are stored once, under the first of their
    names in sorted order; the file's metadata maps each dropped name to the kept one
    (the layout ``safetensors.torch.save_model`` writes).
``optimizer.safetensors``
    every AdamW state tensor, keyed ``"<param index>.<name>"`` (indices in the order of
    the optimiser's ``param_groups``, as ``Optimizer.state_dict`` numbers them).
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

The same format serves one process, DDP and FSDP2. :func:`gather_state` goes through
``torch.distributed.checkpoint.state_dict`` with ``full_state_dict=True, cpu_offload=True``:
FSDP's DTensor shards are all-gathered into whole CPU tensors on rank 0, and a plain module
gives its tensors as they are. :func:`load_checkpoint` hands the whole state to
``set_model_state_dict`` / ``set_optimizer_state_dict``, which keep each rank's shard under
FSDP. A checkpoint written by an FSDP run therefore resumes in one process, and the other
way round.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

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
#: Whole tensors (FSDP shards all-gathered), copied to the CPU, on rank 0 only.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
#: Whole tensors given on every rank; under FSDP each rank keeps its own shard of them.
_SCATTER = StateDictOptions(full_state_dict=True)


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


@dataclass(frozen=True)
class FullState:
    """The whole state of a model (and its optimiser) as CPU tensors, in checkpoint form.

    ``weights`` holds every tensor once: of tied parameters (e.g. ``lm_head.weight`` and
    ``model.embed_tokens.weight``) only the first name in sorted order, and ``aliases`` maps
    each dropped name to the kept one. ``optimizer`` is keyed ``"<param index>.<slot>"`` and
    ``param_groups`` holds the groups' settings with parameter indices. On ranks other than
    0 of a distributed run every field is empty.
    """

    weights: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    param_groups: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every name of the model's state dict; tied names share one tensor."""
        tied = {alias: self.weights[kept] for alias, kept in self.aliases.items()}
        return {**self.weights, **tied}


def gather_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> FullState:
    """Return the whole state of ``model`` (and ``optimizer``) on rank 0.

    ``model`` is the bare student: a plain module, the module inside DDP, or an
    FSDP2-sharded module. Under FSDP this all-gathers the shards, so every rank must call
    it; only rank 0 receives the tensors, the others get an empty :class:`FullState`.
    """
    weights = get_model_state_dict(model, options=_GATHER)
    optim = {} if optimizer is None else get_optimizer_state_dict(model, optimizer, options=_GATHER)
    if not weights:  # a rank other than 0
        return FullState({})
    aliases = _tied_aliases(model)
    kept = {name: _tensor(t).contiguous() for name, t in weights.items() if name not in aliases}
    if not optim:
        return FullState(kept, aliases)
    tensors, param_groups = _flatten_optimizer(optim)
    return FullState(kept, aliases, tensors, param_groups)


def save_checkpoint(
    run_dir: Path,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint of a single-process ``model`` and ``optimizer``; return its dir.

    :func:`gather_state` then :func:`write_checkpoint`. In a distributed run call those
    two yourself: every rank gathers, rank 0 writes.
    """
    return write_checkpoint(run_dir, state, gather_state(model, optimizer), config, keep)


def write_checkpoint(
    run_dir: Path, state: TrainState, full: FullState, config: dict[str, Any], keep: int = 2
) -> Path:
    """Write a checkpoint of ``state`` and ``full`` atomically; keep the newest ``keep``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:08d}"
    tmp = root / f".tmp-step-{state.step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    save_file(full.weights, str(tmp / "model.safetensors"), metadata=full.aliases or None)
    save_file(full.optimizer, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_rest = _capture_rng()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    trainer_state = {"state": asdict(state), "param_groups": full.param_groups, "rng": rng_rest}
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
    """Verify ``ckpt``, load its weights (and optimiser and RNG states); return the state.

    In a distributed run every rank calls this with its bare student (see
    :func:`gather_state`) and its optimiser.
    """
    # Every rank verifies and reads the files itself rather than rank 0 reading and
    # broadcasting (``broadcast_from_rank0``): a corrupted file then fails on every rank
    # before any collective, instead of leaving the other ranks waiting in a broadcast that
    # never comes; and DDP ranks read their replica the same way.
    verify_checkpoint(ckpt)
    ckpt = Path(ckpt)
    weights = _read_weights(ckpt / "model.safetensors")
    _require_fit(ckpt / "model.safetensors", weights, model)
    set_model_state_dict(model, dict(weights), options=_SCATTER)  # a copy: DSD edits it
    saved = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    if optimizer is not None:
        tensors = load_file(str(ckpt / "optimizer.safetensors"))
        names = _param_names(model, optimizer)
        full = _unflatten_optimizer(tensors, saved["param_groups"], names)
        set_optimizer_state_dict(model, optimizer, full, options=_SCATTER)
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


def _tensor(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):  # pragma: no cover - model state is all tensors
        raise CheckpointError(f"model state holds a {type(value).__name__}, not a tensor")
    return value


def _tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """Map every name of a tied parameter but the first (sorted) to that first name."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    aliases: dict[str, str] = {}
    for group in names.values():
        kept, *dropped = sorted(group)
        aliases.update(dict.fromkeys(dropped, kept))
    return aliases


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, tied names (from its metadata) restored."""
    weights = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    for alias, kept in metadata.items():
        if kept in weights and alias not in weights:
            weights[alias] = weights[kept]
    return weights


def _require_fit(path: Path, weights: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Refuse weights whose names or shapes differ from the model's (FSDP: full shapes)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = sorted(
        f"{name} {tuple(weights[name].shape)} != {expected[name]}"
        for name in set(expected) & set(weights)
        if tuple(weights[name].shape) != expected[name]
    )
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint file {path} does not fit the student: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, other shapes {shapes[:3]}; resume with the run's "
            "own config"
        )


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each optimiser parameter, in ``param_groups`` order (its index)."""
    name_of = {id(param): name for name, param in model.named_parameters()}
    params = chain.from_iterable(group["params"] for group in optimizer.param_groups)
    return [name_of[id(param)] for param in params]


def _flatten_optimizer(
    optim: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """A name-keyed optimiser state dict as ``"<index>.<slot>"`` tensors and indexed groups."""
    order = chain.from_iterable(group["params"] for group in optim["param_groups"])
    index = {name: i for i, name in enumerate(order)}
    tensors: dict[str, torch.Tensor] = {}
    for name, slots in optim["state"].items():
        for slot, value in slots.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{index[name]}.{slot}"] = tensor.detach().cpu().contiguous()
    groups = [
        {**group, "params": [index[name] for name in group["params"]]}
        for group in optim["param_groups"]
    ]
    return tensors, groups


def _unflatten_optimizer(
    tensors: dict[str, torch.Tensor], param_groups: list[dict[str, Any]], names: list[str]
) -> dict[str, Any]:
    """The inverse of :func:`_flatten_optimizer`, parameter ``i`` named ``names[i]``."""
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        index, slot = key.split(".", 1)
        state.setdefault(names[int(index)], {})[slot] = tensor
    groups = [
        {
            **{k: tuple(v) if k == "betas" else v for k, v in group.items()},
            "params": [names[i] for i in group["params"]],
        }
        for group in param_groups
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
