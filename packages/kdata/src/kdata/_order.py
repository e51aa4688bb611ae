"""Epoch orders: seeded shuffles, and the share of one ``torch.distributed`` rank."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

__all__ = ["resolve_shard", "resolve_seed", "epoch_order", "shard"]


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None


def resolve_shard(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: as given, else the default process group's, else ``(0, 1)``.

    Uses ``torch.distributed`` directly (no sibling package): a loader made in a DDP
    process started by ``torchrun`` shards itself.
    """
    if (rank is None) != (world_size is None):
        raise ValueError(
            f"pass both rank and world_size, or neither (then they come from "
            f"torch.distributed); got rank={rank!r}, world_size={world_size!r}"
        )
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    rank, world_size = _as_int(rank, "rank"), _as_int(world_size, "world_size")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


def resolve_seed(seed: int | None, world_size: int, shuffle: bool) -> int:
    """A seed for the epoch shuffles: the given one, or one drawn once (shared by all ranks).

    Raises:
        ValueError: shuffling across ranks without a seed and without a process group to
            agree on one.
    """
    if seed is not None:
        seed = _as_int(seed, "seed")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        return seed
    drawn = int(np.random.SeedSequence().entropy % (2**63))  # type: ignore[operator]
    if world_size > 1 and shuffle:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "shuffle=True with world_size > 1 needs a seed shared by every rank (pass "
                "seed=...), or an initialized torch.distributed process group to agree on one"
            )
        box: list[Any] = [drawn]
        dist.broadcast_object_list(box, src=0)  # every rank must shuffle the same way
        drawn = int(box[0])
    return drawn


def epoch_order(length: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray[Any, Any]:
    """Batch (or row) order of one epoch: ``arange`` or a permutation fixed by (seed, epoch)."""
    if not shuffle:
        return np.arange(length, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(length).astype(np.int64)


def shard(order: np.ndarray[Any, Any], rank: int, world_size: int, drop_last: bool) -> Any:
    """This rank's share of ``order``: every item to exactly one rank, round robin.

    With ``drop_last`` the tail that cannot be split evenly is dropped, so every rank gets
    the same count (what DDP needs to stay in step).
    """
    if world_size == 1:
        return order
    if drop_last:
        order = order[: len(order) - len(order) % world_size]
    return order[rank::world_size]
