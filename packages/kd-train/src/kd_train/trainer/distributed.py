"""``torchrun`` support: who am I, DDP wrapping, and the few collectives the loop needs.

The same ``kd-train distill`` runs alone or under ``torchrun --nproc_per_node N``. torchrun
tells each process its place through ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the
command line reads them (:func:`from_environ`) and hands a :class:`DistContext` to the
loop, which never looks at the environment itself. The backend is ``gloo`` on CPU and
``nccl`` on CUDA. Only rank 0 (:attr:`DistContext.is_main`) writes files.

>>> from kd_train.trainer.distributed import from_environ
>>> ctx = from_environ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
>>> (ctx.rank, ctx.world_size, ctx.is_main)
(1, 2, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
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
        backend = "nccl" if ctx.device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op when not distributed)."""
    if ctx.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """Wrap ``model`` in DDP when distributed; return it unchanged otherwise."""
    if ctx.world_size == 1:
        return model
    ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


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


def replica_digests(model: torch.nn.Module, ctx: DistContext) -> list[str]:
    """SHA-256 of every rank's parameters, in rank order (DDP replicas must be identical)."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    mine = digest.hexdigest()
    if ctx.world_size == 1:
        return [mine]
    gathered: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    return [str(d) for d in gathered]
