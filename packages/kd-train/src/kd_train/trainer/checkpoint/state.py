"""What a checkpoint holds: the loop's :class:`TrainState` and the model's :class:`FullState`.

:func:`~kd_train.trainer.checkpoint.gather_state` turns a plain, DDP or FSDP2-sharded
student (and its optimiser) into whole CPU tensors through
``torch.distributed.checkpoint.state_dict``; :func:`load_weights` and
:func:`load_optimizer` hand such tensors back, and under FSDP each rank keeps its own shard
of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from kd_train.trainer.checkpoint.manifest import CheckpointError

#: Whole tensors (FSDP shards all-gathered), copied to the CPU, on rank 0 only.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
#: Whole tensors given on every rank; under FSDP each rank keeps its own shard of them.
_SCATTER = StateDictOptions(full_state_dict=True)


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
    sampler_rng: list[str] | None = None


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


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load the weights file ``path`` into ``model`` (tied names restored; FSDP keeps shards).

    Raises:
        CheckpointError: the file's names or shapes differ from the model's, naming the file.
    """
    weights = _read_weights(path)
    _require_fit(path, weights, model)
    set_model_state_dict(model, dict(weights), options=_SCATTER)  # a copy: DSD edits it


def load_optimizer(
    tensors: dict[str, torch.Tensor],
    param_groups: list[dict[str, Any]],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Load optimiser state in :class:`FullState` form (``"<index>.<slot>"``) into ``optimizer``."""
    names = _param_names(model, optimizer)
    full = _unflatten_optimizer(tensors, param_groups, names)
    set_optimizer_state_dict(model, optimizer, full, options=_SCATTER)


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
