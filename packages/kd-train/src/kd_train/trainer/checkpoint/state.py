"""What a checkpoint holds: the loop's :class:`TrainState` and the model's :class:`FullState`.

:func:`~kd_train.trainer.checkpoint.gather_state` turns a plain, DDP or FSDP2-sharded
student (and its optimiser) into whole CPU tensors through
``torch.distributed.checkpoint.state_dict``; :func:`load_weights` and
:func:`load_optimizer` hand such tensors back, and under FSDP each rank keeps its own shard
of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from itertools import chain
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from kd_train.trainer.checkpoint.finite import first_non_finite
from kd_train.trainer.checkpoint.manifest import CheckpointError, StateModel, state_error
from kd_train.typed_config import InvalidConfigError

#: Whole tensors (FSDP shards all-gathered), copied to the CPU, on rank 0 only.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
#: Whole tensors given on every rank; under FSDP each rank keeps its own shard of them.
_SCATTER = StateDictOptions(full_state_dict=True)
#: The key of an optimiser state tensor: ``"<param index>.<slot>"``.
_OPTIM_KEY = re.compile(r"^(\d+)\.(\w+)$")


# An integer that is never negative (a step, a count, an index).
_Count = Annotated[int, Field(ge=0)]
#: How ``trainer_state.json`` is read: unknown keys and non-finite numbers refused.
_STATE_JSON = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass
class ConfigChange:
    """A config key changed on resume and accepted by ``kd-train resume --allow-change KEY``.

    ``before`` and ``after`` are the key's values (``None`` where the key was absent);
    ``step`` is the checkpoint the run resumed from.
    """

    __pydantic_config__ = _STATE_JSON

    step: int
    key: str
    before: Any = None
    after: Any = None


@dataclass
class TrainState:
    """Where the loop is: the optimiser step and the data cursor ``(epoch, index)``.

    ``index`` counts the micro-batches already consumed in ``epoch``; the data order of an
    epoch is a pure function of ``(seed, epoch)``, so the cursor is all resume needs.
    ``sampler_rng`` holds the on-policy sampler's generator state of every rank
    (``kd_train.trainer.on_policy.Sampler``), ``None`` in an off-policy run.
    ``changes`` lists the config changes accepted on resume (:class:`ConfigChange`).

    ``trainer_state.json`` is checked against these fields when a checkpoint is read
    (:func:`kd_train.trainer.checkpoint.state.parse_trainer_state`): a field added with a
    default is optional there; an unknown key, a wrong type, a negative integer or a
    non-finite number is refused.
    """

    __pydantic_config__ = _STATE_JSON

    step: int = 0
    epoch: int = 0
    index: int = 0
    tokens_seen: int = 0
    best_eval_loss: float | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    sampler_rng: list[str] | None = None
    changes: list[ConfigChange] = field(default_factory=list)


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


#: A setting of an optimiser group other than the typed ones: a JSON scalar.
_Scalar = bool | int | float | str | None


class ParamGroup(StateModel):
    """One optimiser parameter group as stored: parameter indices and AdamW's settings."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, _Scalar]

    params: list[_Count] = Field(description="Indices of the group's parameters.")
    lr: Annotated[float, Field(ge=0)] = Field(description="The learning rate.")
    betas: tuple[float, float] = Field(description="AdamW's betas.")
    eps: Annotated[float, Field(gt=0)] = Field(description="AdamW's epsilon.")
    weight_decay: float = Field(description="AdamW's decoupled weight decay.")


class RngRest(StateModel):
    """The generator states ``rng.safetensors`` cannot hold (see :mod:`~.rng`)."""

    python: tuple[
        int,
        Annotated[list[Annotated[int, Field(ge=0, le=2**32 - 1)]], Field(min_length=625)],
        float | None,
    ] = Field(description="``random.getstate()``: version, 625 words, cached Gaussian.")
    numpy: tuple[str, _Count, Annotated[int, Field(ge=0, le=1)], float] = Field(
        description="NumPy's generator name, position, has-Gaussian flag and cached Gaussian."
    )


class TrainerStateFile(StateModel):
    """The schema of ``trainer_state.json``."""

    state: TrainState = Field(description="The loop's state.")
    param_groups: list[ParamGroup] = Field(description="The optimiser's groups.")
    rng: RngRest = Field(description="Python's and NumPy's generator states.")

    @model_validator(mode="after")
    def _no_negative_integer(self) -> TrainerStateFile:
        """Every integer of the state (a step, a count, an index) is at least 0."""
        records: list[tuple[str, Any]] = [("state", self.state)]
        records += [(f"state.changes[{i}]", c) for i, c in enumerate(self.state.changes)]
        for where, record in records:
            for item in fields(record):
                value = getattr(record, item.name)
                if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                    raise InvalidConfigError(f"{where}.{item.name}: must be >= 0, got {value}")
        return self


def parse_trainer_state(data: bytes, path: Path) -> TrainerStateFile:
    """Parse and schema-check the bytes of a ``trainer_state.json`` (one-line errors).

    Raises:
        CheckpointError: naming ``path`` and every field that is wrong.
    """
    try:
        json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint file {path} is not valid JSON ({exc})") from None
    try:
        return TrainerStateFile.model_validate_json(data, strict=True)
    except ValidationError as exc:
        raise CheckpointError(state_error(exc, TrainerStateFile, path)) from None


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
    bad = first_non_finite(weights)
    if bad is not None:
        raise CheckpointError(f"checkpoint file {path} holds non-finite values in {bad}")
    set_model_state_dict(model, dict(weights), options=_SCATTER)  # a copy: DSD edits it


def load_optimizer(
    tensors: dict[str, torch.Tensor],
    param_groups: list[dict[str, Any]],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Load optimiser state in :class:`FullState` form (``"<index>.<slot>"``) into ``optimizer``.

    Raises:
        CheckpointError: the state does not fit ``optimizer`` or holds a non-finite value.
    """
    names = _param_names(model, optimizer)
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"checkpoint optimiser state holds non-finite values in {bad}")
    full = _unflatten_optimizer(tensors, param_groups, names)
    _require_shapes(full["state"], model)
    try:
        set_optimizer_state_dict(model, optimizer, full, options=_SCATTER)
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise CheckpointError(
            f"checkpoint optimiser state does not fit the optimiser ({exc}); resume with the "
            "run's own config"
        ) from None
    for group in optimizer.param_groups:
        # JSON and set_optimizer_state_dict both hand Adam's betas back as a list; the
        # optimiser built them as a tuple, and a resumed state_dict equals the saved one.
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])


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
    try:
        weights = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint file {path} is not a safetensors file ({exc})") from None
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


def _require_shapes(state: dict[str, dict[str, torch.Tensor]], model: torch.nn.Module) -> None:
    """Every slot is shaped like its parameter (``step``: a scalar); else a one-line refusal.

    ``set_optimizer_state_dict`` takes a moment of another shape without a word, and AdamW
    then broadcasts it against the gradient: training goes on, wrongly.
    """
    shapes = {name: tuple(param.shape) for name, param in model.named_parameters()}
    for name, slots in sorted(state.items()):
        for slot, tensor in sorted(slots.items()):
            want = () if slot == "step" else shapes[name]
            if tuple(tensor.shape) != want:
                raise CheckpointError(
                    f"checkpoint optimiser state of {name}.{slot} has shape "
                    f"{tuple(tensor.shape)}, not {want}"
                )


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
        match = _OPTIM_KEY.match(key)
        if match is None or int(match[1]) >= len(names):
            raise CheckpointError(
                f"checkpoint optimiser state has a tensor {key!r}: not '<index>.<slot>' of one "
                f"of the {len(names)} parameters"
            )
        state.setdefault(names[int(match[1])], {})[match[2]] = tensor
    if any(i >= len(names) for group in param_groups for i in group["params"]):
        raise CheckpointError(
            f"checkpoint optimiser groups name a parameter index beyond the {len(names)} "
            "parameters; resume with the run's own config"
        )
    groups = [
        {
            **group,
            "params": [names[i] for i in group["params"]],
        }
        for group in param_groups
    ]
    return {"state": state, "param_groups": groups}
