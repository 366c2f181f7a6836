"""``torchrun`` support: who am I, DDP or FSDP2, and the few collectives the loop needs.

The same ``kd-train distill`` runs alone or under ``torchrun --nproc_per_node N``. torchrun
tells each process its place through ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the
command line reads them (:func:`from_environ`) and hands a :class:`DistContext` to the
loop, which never looks at the environment itself. The backend is ``gloo`` on CPU and
``nccl`` on CUDA. Only rank 0 (:attr:`DistContext.is_main`) writes files.

Both strategies (``distributed.strategy`` in the run config, see :func:`wrap`) average
gradients over ranks: DDP's all-reduce and FSDP2's reduce-scatter each divide the sum by
the world size. The loop multiplies its loss by the world size to undo that, because its
loss is already normalised by the label tokens of all ranks.

>>> from kd_train.trainer.distributed import from_environ
>>> ctx = from_environ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
>>> (ctx.rank, ctx.world_size, ctx.is_main)
(1, 2, False)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from kd_train.errors import KDTrainError


@dataclass(frozen=True)
class DistContext:
    """This process's rank among ``world_size`` and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, metrics and the final model."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
        if torch.cuda.is_available():  # pragma: no cover - CPU-only CI
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def from_environ(env: Mapping[str, str]) -> DistContext:
    """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (absent: a single process)."""
    try:
        rank = int(env.get("RANK", "0"))
        world = int(env.get("WORLD_SIZE", "1"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise KDTrainError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}); start distributed runs "
            "with torchrun"
        ) from exc
    if not 0 <= rank < world:
        raise KDTrainError(f"RANK={rank} is outside WORLD_SIZE={world}; start with torchrun")
    return DistContext(rank, world, local)


def init(ctx: DistContext) -> None:
    """Join the process group (``init_method="env://"``, as torchrun sets up) if distributed."""
    if ctx.world_size > 1 and not dist.is_initialized():
        if ctx.device.type == "cuda":  # pragma: no cover - CPU-only CI
            torch.cuda.set_device(ctx.device)  # FSDP's device mesh uses the current device
        backend = "nccl" if ctx.device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op when not distributed)."""
    if ctx.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: DistContext, strategy: str = "ddp") -> torch.nn.Module:
    """Prepare ``model`` for data-parallel training; return the module to call forward on.

    One process: ``model`` unchanged, whatever the strategy. ``ddp``: a
    ``DistributedDataParallel`` wrapper around it. ``fsdp``: FSDP2, applied in place, so
    the returned module is ``model`` itself; its parameters become DTensor shards, so build
    the optimiser after this call.
    """
    if ctx.world_size == 1:
        return model
    if strategy == "fsdp":
        return _fully_shard(model, ctx)
    ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _fully_shard(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``fully_shard`` every decoder layer, then the root (embeddings, final norm, head).

    The standard FSDP2 recipe: one communication group per layer, so a layer's weights are
    all-gathered just for its forward and backward and its gradients are reduce-scattered
    right after. The layers are the modules whose class the ``transformers`` model lists
    in ``_no_split_modules`` (``LlamaDecoderLayer``, ``Qwen2DecoderLayer``, ...).
    """
    layer_classes = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise KDTrainError(
            f"distributed.strategy 'fsdp': no decoder layer to shard in {type(model).__name__} "
            f"(its _no_split_modules is {sorted(layer_classes)}); use strategy 'ddp'"
        )
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def sync_grads(model: torch.nn.Module, *, now: bool) -> contextlib.AbstractContextManager[Any]:
    """The context of one micro-batch's backward; ``now=False`` lets DDP skip its all-reduce.

    DDP gradients then accumulate locally until the last micro-batch of the step. FSDP
    reduce-scatters after every micro-batch anyway: deferring it would keep a whole
    unsharded gradient on every rank until the last one, the memory FSDP exists to save.
    """
    if not now and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def sum_across(value: float, ctx: DistContext) -> float:
    """Sum a Python number over all ranks (identity when not distributed)."""
    if ctx.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if ctx.world_size > 1:
        dist.barrier()


def gather_text(value: str, ctx: DistContext) -> list[str]:
    """Every rank's ``value``, in rank order (``[value]`` when not distributed)."""
    if ctx.world_size == 1:
        return [value]
    gathered: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return [str(v) for v in gathered]


def copy_full_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Load ``source``'s whole weights into the unsharded ``target`` (a collective under FSDP).

    Every rank gets the full tensors (FSDP shards all-gathered), so ``target`` can run
    alone, e.g. to ``generate`` with a different number of forward passes on each rank.
    """
    full = get_model_state_dict(source, options=StateDictOptions(full_state_dict=True))
    target.load_state_dict(full)


def replica_digests(model: torch.nn.Module, ctx: DistContext) -> list[str]:
    """SHA-256 of the full weights as each rank holds them, in rank order; all must be equal.

    DDP: each rank hashes its own replica, so a replica that drifted shows. FSDP holds no
    replicas: each rank hashes the whole tensors all-gathered from the shards, one at a
    time. The entries are then equal by construction for the sharded parameters; they
    still check the replicated buffers and that every rank gathers the same model. In both
    cases the digest equals the one a single process with the same weights gives.
    """
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()  # a collective: every rank walks the same order
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    mine = digest.hexdigest()
    if ctx.world_size == 1:
        return [mine]
    gathered: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    return [str(d) for d in gathered]
