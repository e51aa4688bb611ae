"""``torch.distributed`` helpers: one training function for one process or many.

The same function runs unchanged as a plain script (one process, no process group: every
helper is then a no-op), under ``torchrun`` on one or many nodes, or under ``launch``.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import pickle
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ._errors import RankMismatchError
from ._model import ParallelModel

__all__ = [
    "DistributedContext",
    "barrier",
    "current_context",
    "distributed",
    "init_distributed",
    "is_main_process",
    "reduce_metrics",
    "save_on_rank0",
    "shutdown_distributed",
    "unwrap",
    "wrap_ddp",
]

logger = logging.getLogger("kparallel")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and its device.

    Attributes:
        rank: Global rank (0 .. world_size-1).
        world_size: Number of processes (1 without a process group).
        local_rank: Rank on this node (selects the GPU).
        backend: ``"nccl"``, ``"gloo"``..., or ``None`` without a process group.
        device: The device this process should train on.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and saves)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when a process group is up (collectives do something)."""
        return self.backend is not None


def _collective_device(ctx: DistributedContext) -> torch.device:
    """Where a collective's tensors must live: this rank's GPU under nccl, else the CPU."""
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def _env_int(name: str, default: int | None = None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={raw!r} must be an integer (torchrun sets it)"
        ) from None


def _device_for(backend: str | None, local_rank: int) -> torch.device:
    wants_gpu = backend in ("nccl", None)
    if wants_gpu and torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def current_context() -> DistributedContext:
    """The context of the running process group; without one, the environment's.

    Without a process group, ``rank`` and ``world_size`` come from ``RANK`` and
    ``WORLD_SIZE`` when set (torchrun sets them before the group exists), else 0 and 1;
    ``is_distributed`` is False and collectives are no-ops.

    Examples:
        >>> current_context().world_size
        1
    """
    local_rank = _env_int("LOCAL_RANK", 0) or 0
    if dist.is_available() and dist.is_initialized():
        backend = str(dist.get_backend())
        return DistributedContext(
            dist.get_rank(),
            dist.get_world_size(),
            local_rank,
            backend,
            _device_for(backend, local_rank),
        )
    # No group (yet): rank and world size as torchrun set them, so that shard() called
    # before init_distributed() still gives this rank its own share.
    rank = _env_int("RANK", 0) or 0
    world_size = _env_int("WORLD_SIZE", 1) or 1
    return DistributedContext(rank, world_size, local_rank, None, _device_for(None, local_rank))


def init_distributed(
    backend: str | None = None, *, timeout: timedelta | float | None = None
) -> DistributedContext:
    """Set up the process group from the environment ``torchrun`` (or ``launch``) sets.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
    Without ``WORLD_SIZE`` (a plain ``python train.py``) nothing is started and a
    one-process context is returned, so the same script runs everywhere. Calling it again
    returns the running group's context.

    Args:
        backend: ``None`` picks ``"nccl"`` when this process has a GPU, else ``"gloo"``.
        timeout: Collective timeout (a ``timedelta`` or seconds); torch's default if None.

    Returns:
        The ``DistributedContext`` of this process. With NCCL the current CUDA device is
        set to ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: a malformed or missing variable (the message names it), or
            ``backend="nccl"`` without a GPU for this ``LOCAL_RANK``.
        TypeError: ``backend`` is not a string.
        RuntimeError: ``torch.distributed`` is not available in this torch build.

    Examples:
        >>> ctx = init_distributed()   # plain process: no group
        >>> (ctx.rank, ctx.world_size, ctx.is_distributed)
        (0, 1, False)
    """
    if dist.is_available() and dist.is_initialized():
        return current_context()
    world_size = _env_int("WORLD_SIZE")
    if world_size is None:
        return current_context()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed support")
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", rank)
    if rank is None or local_rank is None:
        raise ValueError("WORLD_SIZE is set but RANK is not: launch with torchrun or launch()")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ValueError(
                f"{name} is not set: launch with torchrun or kparallel.launch(), which set "
                "MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE"
            )
    if backend is None:
        has_gpu = torch.cuda.is_available() and local_rank < torch.cuda.device_count()
        backend = "nccl" if has_gpu else "gloo"
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str such as 'gloo' or 'nccl', got {backend!r}")
    device = _device_for(backend, local_rank)
    if backend == "nccl" and device.type != "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(
            f"backend='nccl' needs a CUDA GPU for LOCAL_RANK={local_rank}, but this process "
            f"sees {count}; use backend='gloo' (or None, which picks it without a GPU)"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = (
            timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
        )
    logger.info(
        "rank %d of %d (local rank %d) joining the process group: backend %s, device %s, "
        "rendezvous %s:%s",
        rank,
        world_size,
        local_rank,
        backend,
        device,
        os.environ["MASTER_ADDR"],
        os.environ["MASTER_PORT"],
    )
    dist.init_process_group(
        backend=backend, init_method="env://", rank=rank, world_size=world_size, **kwargs
    )
    logger.info("rank %d of %d: process group up", rank, world_size)
    return DistributedContext(rank, world_size, local_rank, backend, device)


def shutdown_distributed() -> None:
    """Destroy the process group if one is up (safe to call without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(
    backend: str | None = None, *, timeout: timedelta | float | None = None
) -> Iterator[DistributedContext]:
    """``init_distributed`` on entry; destroys the group on exit if it started it.

    Examples:
        >>> with distributed() as ctx:
        ...     print(ctx.world_size)
        1
    """
    was_up = dist.is_available() and dist.is_initialized()
    ctx = init_distributed(backend, timeout=timeout)
    try:
        yield ctx
    finally:
        if not was_up:
            shutdown_distributed()


def _require_group_if_launched(what: str) -> DistributedContext:
    """This process's context; an error when torchrun started several ranks but no group.

    Without it, ``wrap_ddp`` and ``reduce_metrics`` would quietly act per process and every
    rank would train (or report) on its own, which looks like it works and is wrong.
    """
    ctx = current_context()
    if not ctx.is_distributed and ctx.world_size > 1:
        raise RuntimeError(
            f"{what}: WORLD_SIZE={ctx.world_size} says this is one of several ranks, but no "
            "process group is up; call kparallel.init_distributed() first"
        )
    return ctx


def is_main_process() -> bool:
    """True on rank 0, or when there is no process group (the process that logs and saves).

    Examples:
        >>> is_main_process()
        True
    """
    return current_context().is_main


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: nn.Module, **ddp_kwargs: Any) -> nn.Module:
    """Move ``model`` to this process's device and wrap it in ``DistributedDataParallel``.

    Without a process group the model is returned (moved) unwrapped, so the training
    function is the same for one process and many.

    Args:
        model: The model to train.
        **ddp_kwargs: Passed to ``DistributedDataParallel`` (``find_unused_parameters``...).

    Returns:
        The DDP-wrapped model, or ``model`` itself without a process group.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        RuntimeError: ``WORLD_SIZE`` > 1 (launched by torchrun) but ``init_distributed``
            was not called.

    Examples:
        >>> wrap_ddp(nn.Linear(2, 2)).__class__.__name__   # no group: returned as is
        'Linear'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"wrap_ddp expects a torch.nn.Module, got {type(model).__name__}")
    ctx = _require_group_if_launched("wrap_ddp")
    model.to(ctx.device)
    if not ctx.is_distributed:
        return model
    if ctx.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [ctx.device.index])
        ddp_kwargs.setdefault("output_device", ctx.device.index)
    return nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel / multi_gpu_model wrapper (else ``model``).

    Wrappers nested in one another are all removed, so ``unwrap(m).state_dict()`` has the
    plain model's keys whatever trained it.

    Args:
        model: A model, wrapped or not.

    Returns:
        The innermost module.

    Examples:
        >>> inner = nn.Linear(2, 2)
        >>> unwrap(nn.DataParallel(inner)) is inner
        True
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(model, ParallelModel):
            model = model.template
        else:
            return model


_OPS = {"mean", "sum", "max", "min"}


def _local_metrics(
    metrics: Mapping[str, float | int | torch.Tensor], op: str, weight: float | None
) -> tuple[list[str], list[float], float]:
    """This rank's names (sorted), values and weight, checked; raises what a caller would."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of names to numbers, got {metrics!r}")
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
    if weight is not None and op != "mean":
        raise ValueError(f"weight only applies to op='mean', got op={op!r}")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not float(weight) >= 0
    ):
        raise ValueError(f"weight must be a number >= 0, got {weight!r}")
    for name in metrics:
        if not isinstance(name, str):
            raise TypeError(f"metric names must be strings, got {name!r}")
    # Sorted: the all_reduce pairs values by position, and two ranks may have built their
    # dicts in different orders.
    names = sorted(metrics)
    values: list[float] = []
    for name in names:
        value = metrics[name]
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"metric {name!r} must be a number or a one-element tensor, got shape "
                    f"{tuple(value.shape)}"
                )
            values.append(float(value.detach().cpu().item()))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            values.append(float(value))  # numpy scalars too
        else:
            raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
    return names, values, 1.0 if weight is None else float(weight)


def _gather_objects(obj: object, world_size: int, device: torch.device) -> list[Any]:
    """Every rank's ``obj``, index = rank (``all_gather_object`` without its numpy need)."""
    payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    longest = max(int(s.item()) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload
    parts = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return [
        pickle.loads(bytes(part[: int(n.item())].cpu().tolist()))
        for part, n in zip(parts, sizes, strict=True)
    ]


def _agree(what: str, mine: tuple[Any, BaseException | None], ctx: DistributedContext) -> None:
    """Check across ranks that every rank passed the same ``mine[0]`` and none failed.

    One gather of each rank's (key, local error); then every rank raises the same error,
    so no rank returns a wrong value and none waits in a collective that another rank
    skipped.
    """
    key, error = mine
    device = _collective_device(ctx)
    local = (key, None if error is None else (type(error), str(error)))
    gathered = _gather_objects(local, ctx.world_size, device)
    failures = [(r, e) for r, (_, e) in enumerate(gathered) if e is not None]
    if failures:
        rank, (kind, message) = failures[0]
        if error is not None and rank == ctx.rank:
            raise error
        if not isinstance(kind, type) or not issubclass(kind, ValueError | TypeError):
            kind = RuntimeError
        raise kind(f"{what} failed on rank {rank}: {message}")
    keys = [k for k, _ in gathered]
    if any(k != keys[0] for k in keys[1:]):
        listing = "; ".join(f"rank {r}: {k}" for r, k in enumerate(keys))
        raise RankMismatchError(
            f"{what}: the ranks disagree ({listing}); every rank must pass the same metric "
            "names and op",
            by_rank=list(keys),
        )


def reduce_metrics(
    metrics: Mapping[str, float | int | torch.Tensor],
    op: str = "mean",
    *,
    weight: float | None = None,
) -> dict[str, float]:
    """Combine per-rank metric values into one value per name, the same on every rank.

    The ranks first check that they agree: one gather of each rank's sorted
    metric names and ``op`` (and of any argument error). When they differ, or a rank's
    arguments are wrong, every rank raises the same error instead of some returning a
    wrong value and others hanging.

    Args:
        metrics: Name to a number (numpy scalars too) or a one-element tensor; the same
            names on every rank, in any order.
        op: ``"mean"``, ``"sum"``, ``"max"`` or ``"min"``.
        weight: With ``op="mean"``, this rank's weight (e.g. its sample count, >= 0): the
            result is the weighted mean, exact when ranks saw different amounts of data.

    Returns:
        A dict of floats, in the order of ``metrics`` (values are matched by name).
        Without a process group, the values themselves.

    Raises:
        RankMismatchError: the ranks passed different metric names (or a different
            number of them) or different ops; raised on every rank, ``by_rank`` lists
            what each passed.
        ValueError: unknown ``op``, a multi-element tensor, a weight with another op, a
            negative weight, or weights summing to zero over the ranks (on every rank,
            the message naming the rank at fault).
        TypeError: a value that is not a number or a tensor (on every rank, likewise).
        RuntimeError: ``WORLD_SIZE`` > 1 but ``init_distributed`` was not called.

    Examples:
        >>> reduce_metrics({"loss": 0.5, "acc": torch.tensor(0.75)})
        {'loss': 0.5, 'acc': 0.75}
    """
    ctx = _require_group_if_launched("reduce_metrics")
    if not ctx.is_distributed:
        names, values, _ = _local_metrics(metrics, op, weight)
        local = dict(zip(names, values, strict=True))
        return {n: local[n] for n in metrics}
    error: BaseException | None = None
    names, values, w = [], [], 1.0
    try:
        names, values, w = _local_metrics(metrics, op, weight)
    except (TypeError, ValueError) as exc:
        error = exc
    _agree("reduce_metrics", ((names, op), error), ctx)
    device = _collective_device(ctx)
    order = list(metrics)
    if op == "mean":
        packed = torch.tensor([v * w for v in values] + [w], dtype=torch.float64, device=device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        total = float(packed[-1])
        if total == 0:
            raise ValueError("reduce_metrics: the ranks' weights sum to 0; nothing to average")
        means = {n: float(packed[i]) / total for i, n in enumerate(names)}
        return {n: means[n] for n in order}
    packed = torch.tensor(values, dtype=torch.float64, device=device)
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(packed, op=reduce_op[op])
    reduced = {n: float(packed[i]) for i, n in enumerate(names)}
    return {n: reduced[n] for n in order}


def _atomic_save(obj: object, target: Path) -> None:
    if not target.parent.is_dir():
        raise FileNotFoundError(f"save_on_rank0: folder {str(target.parent)!r} does not exist")
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    # os.open with 0o666 so the umask applies: the checkpoint gets the permissions a plain
    # torch.save would give it (mkstemp would leave it readable by its owner only).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        torch.save(obj, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_on_rank0(obj: object, path: str | os.PathLike[str]) -> bool:
    """``torch.save(obj, path)`` on rank 0 only, atomically; the other ranks wait for it.

    The file is written to a temporary name in the same folder and renamed, so no rank
    (or crash) ever sees a half-written checkpoint. Rank 0 then tells every rank whether
    it succeeded: when this returns on any rank the file is complete, and when rank 0
    failed every rank raises (instead of the others waiting forever).

    Args:
        obj: What to save (e.g. ``unwrap(model).state_dict()``).
        path: Destination file; its folder must exist on rank 0.

    Returns:
        True on the rank that wrote the file.

    Raises:
        FileNotFoundError: (rank 0) the destination folder does not exist.
        RuntimeError: (other ranks) rank 0 failed to write the file.

    Examples:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> save_on_rank0({"w": torch.ones(2)}, os.path.join(d, "ckpt.pt"))
        True
    """
    target = Path(path)
    ctx = current_context()
    error: BaseException | None = None
    if ctx.is_main:
        try:
            _atomic_save(obj, target)
            logger.info("save_on_rank0: rank 0 wrote %s", target)
        except BaseException as exc:  # reported to the other ranks first, then re-raised
            error = exc
    if ctx.is_distributed:
        device = _collective_device(ctx)
        failed = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device)
        dist.broadcast(failed, src=0)
        if error is None and int(failed.item()) != 0:
            raise RuntimeError(f"save_on_rank0: rank 0 failed to write {str(target)!r}")
    if error is not None:
        raise error
    return ctx.is_main
