"""Epoch orders: seeded shuffles, and the share of one `torch.distributed` rank.

The shuffles and shares are those of `torch.utils.data.DistributedSampler` for the same
seed, epoch and `drop_last` (a `torch.Generator` seeded with `seed + epoch`, `randperm`,
padding by repetition from the start of the order, then every `world_size`-th item from
`rank`), so a rank's share is exactly what DistributedSampler would give it.
"""

from __future__ import annotations

import logging
import math
import operator
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_not_sharded",
    "epoch_order",
    "resolve_seed",
    "resolve_shard",
    "shard",
    "shard_length",
]

logger = logging.getLogger("kdata")

# torch.Generator.manual_seed takes at most 2**64 - 1, and DistributedSampler adds the epoch
_SEED_LIMIT = 2**63


def _as_int(value: Any, name: str, minimum: int | None = None) -> int:
    """`value` as an int (numpy integers accepted; bools and floats refused: TypeError),
    at least `minimum` when given (else ValueError)."""
    wanted = "an int" if minimum is None else f"an int >= {minimum}"
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be {wanted}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be {wanted}, got {value!r} ({type(value).__name__})"
        ) from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return number


def group_matches(rank: int, world_size: int) -> bool:
    """Whether the default process group is initialized and is this `(rank, world_size)`.

    Only then may the loaders run collectives (seed agreement, checks) on it.
    """
    dist = torch.distributed
    return bool(
        world_size > 1
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() == world_size
        and dist.get_rank() == rank
    )


def resolve_shard(rank: Any, world_size: Any) -> tuple[int, int]:
    """`(rank, world_size)`: as given, else the default process group's, else `(0, 1)`.

    Uses `torch.distributed` directly (no sibling package): a loader made in a DDP
    process started by `torchrun` shards itself.

    Raises:
        ValueError: only one of the two is given, `world_size < 1`, or `rank` is outside
            `[0, world_size)`.
        TypeError: one of them is not an int.
    """
    if (rank is None) != (world_size is None):
        raise ValueError(
            f"pass both rank and world_size, or neither (then they come from "
            f"torch.distributed); got rank={rank!r}, world_size={world_size!r}"
        )
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
            if world_size > 1:
                logger.debug(
                    "sharding by the torch.distributed default group: rank %d of %d",
                    rank,
                    world_size,
                )
            return rank, world_size
        return 0, 1
    rank, world_size = _as_int(rank, "rank"), _as_int(world_size, "world_size")
    if world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


def resolve_seed(seed: Any, world_size: int, shuffle: bool) -> int:
    """A seed for the epoch shuffles: the given one, or one drawn once (shared by all ranks).

    A drawn seed is broadcast from rank 0 when `world_size > 1`, `shuffle` is true and a
    process group is initialized (a collective: every rank must call this).

    Raises:
        ValueError: a seed outside `[0, 2**63)`, or shuffling across ranks without a seed
            and without a process group to agree on one.
        TypeError: `seed` is not an int.
    """
    if seed is not None:
        given = _as_int(seed, "seed")
        if not 0 <= given < _SEED_LIMIT:
            raise ValueError(f"seed must be an int in [0, 2**63), got {given}")
        return given
    drawn = int(np.random.SeedSequence().entropy % _SEED_LIMIT)  # type: ignore[operator]
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
        logger.debug("seed %d agreed by broadcast from rank 0", drawn)
    return drawn


def epoch_order(length: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray[Any, Any]:
    """Batch (or row) order of one epoch: `arange`, or DistributedSampler's permutation.

    The permutation is `torch.randperm(length)` drawn from a `torch.Generator` seeded with
    `seed + epoch`, as in `DistributedSampler`.
    """
    if not shuffle:
        return np.arange(length, dtype=np.int64)
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    return torch.randperm(length, generator=generator).numpy().astype(np.int64, copy=False)


def shard_length(length: int, world_size: int, drop_last: bool) -> int:
    """How many items each rank gets from an order of `length` (DistributedSampler's count).

    Every rank gets the same count: `ceil(length / world_size)` (the order is padded by
    repeating its first items), or `length // world_size` with `drop_last`.
    """
    if world_size == 1:
        return length
    if drop_last:
        return length // world_size
    return math.ceil(length / world_size)


def shard(order: np.ndarray[Any, Any], rank: int, world_size: int, drop_last: bool) -> Any:
    """This rank's share of `order`, exactly as `DistributedSampler` splits it.

    Without `drop_last` the order is padded to a multiple of `world_size` by repeating it
    from the start, so every rank gets the same count (a rank that had fewer batches would
    wait forever in the next collective); the padding items are seen twice in the epoch,
    as with DistributedSampler. With `drop_last` the tail that cannot be split evenly is
    dropped instead. Rank `r` then takes items `r, r + world_size, ...`.
    """
    if world_size == 1:
        return order
    length = len(order)
    per_rank = shard_length(length, world_size, drop_last)
    total = per_rank * world_size
    if total > length:  # pad as DistributedSampler: repeat the order from its start
        padding = total - length
        order = np.concatenate([order, np.tile(order, math.ceil(padding / length))[:padding]])
    order = order[:total]
    return order[rank:total:world_size]


def check_not_sharded(obj: object, name: str, world_size: int) -> None:
    """Refuse to shard again what `kparallel.shard` (or the like) already sharded.

    An object carrying `__kshard__ = (rank, world_size)` holds one rank's share already;
    sharding it across `world_size > 1` ranks again would give each rank a share of a
    share (half the data silently lost with two ranks).

    Raises:
        ValueError: `world_size > 1` and `obj.__kshard__` is set.
    """
    mark = getattr(obj, "__kshard__", None)
    if world_size > 1 and mark is not None:
        raise ValueError(
            f"{name} is already sharded (its __kshard__ is {mark!r}, rank/world_size set "
            f"by kparallel.shard) and would be sharded again here across "
            f"world_size={world_size} ranks, leaving each rank a share of a share: shard "
            f"once, either pass the unsharded {name}, or pass rank=0, world_size=1 here"
        )
