"""Deterministic data order and sharding: the data cursor is just ``(epoch, index)``.

The order of epoch ``e`` is ``randperm(n)`` drawn from a generator seeded with
``seed * 1_000_003 + e``, so it depends on nothing but ``(seed, epoch)``. Micro-batch
``i`` of an epoch is the slice ``order[i*G : (i+1)*G]`` with ``G = batch_size * world``,
and rank ``r`` takes ``[r*batch_size : (r+1)*batch_size]`` of it: shards never overlap and
the global batch is the same whatever the number of processes. An epoch has
``n // G`` micro-batches (the remainder is left out so every rank sees full batches).

>>> from kd_train.trainer.batches import epoch_order, micro_batch
>>> order = epoch_order(10, seed=0, epoch=0)
>>> sorted(order) == list(range(10))
True
>>> shards = [micro_batch(order, 0, batch_size=2, rank=r, world=2) for r in range(2)]
>>> shards[0] + shards[1] == order[:4]
True
"""

from __future__ import annotations

import torch

from kd_train.errors import KDTrainError


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Return the example order of ``epoch``: a permutation of ``range(n)`` fixed by the seed."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return [int(i) for i in torch.randperm(n, generator=generator)]


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    """Number of full micro-batches in an epoch of ``n`` examples.

    Raises:
        kd_train.errors.KDTrainError: if the dataset cannot fill a single global micro-batch.
    """
    count = n // (batch_size * world)
    if count == 0:
        raise KDTrainError(
            f"the training set has {n} examples, fewer than one global micro-batch "
            f"(train.batch_size {batch_size} x {world} processes); lower train.batch_size "
            "or add data"
        )
    return count


def micro_batch(order: list[int], index: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Return this rank's example indices of micro-batch ``index`` of an epoch's ``order``."""
    start = index * batch_size * world + rank * batch_size
    return order[start : start + batch_size]
