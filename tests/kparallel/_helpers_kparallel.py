"""Picklable functions the kparallel tests run in worker processes (spawn needs them
importable by name, which test modules under --import-mode=importlib are not)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

import kparallel as kp


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))


def make_data(batches: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return torch.randn(batches * batch, 5, generator=g), torch.randn(
        batches * batch, 3, generator=g
    )


def train_ddp(steps: int, batch: int, save_dir: str) -> dict[str, Any]:
    """Train under a process group (or alone): each rank its shard of every full batch."""
    ctx = kp.init_distributed()
    model = make_model()
    ddp = kp.wrap_ddp(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x, y = make_data(steps, batch)
    seen: list[int] = []
    losses = []
    for step in range(steps):
        rows = list(range(step * batch, (step + 1) * batch))
        mine = kp.shard(rows)  # this rank's rows of the full batch
        idx = torch.tensor(list(mine))
        seen.extend(idx.tolist())
        opt.zero_grad()
        loss = nn.functional.mse_loss(ddp(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The two ranks build the dict in different orders: values must still pair by name.
    pairs = [("loss", losses[-1]), ("rank", float(ctx.rank))]
    metrics = kp.reduce_metrics(dict(pairs if ctx.rank == 0 else pairs[::-1]))
    weighted = kp.reduce_metrics({"rank": float(ctx.rank)}, weight=1.0 + 2.0 * ctx.rank)
    total = kp.reduce_metrics({"rows": float(len(seen))}, "sum")
    wrote = kp.save_on_rank0(kp.unwrap(ddp).state_dict(), os.path.join(save_dir, "model.pt"))
    on_disk = torch.load(os.path.join(save_dir, "model.pt"))  # after the barrier: complete
    try:  # rank 0 cannot write: every rank must raise, none may wait forever
        kp.save_on_rank0({}, os.path.join(save_dir, "missing", "model.pt"))
        failed_save = "no error"
    except (FileNotFoundError, RuntimeError) as exc:
        failed_save = type(exc).__name__
    return {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "seen": seen,
        "metrics": metrics,
        "metric_order": list(metrics),
        "weighted": weighted,
        "failed_save": failed_save,
        "rows": total["rows"],
        "wrote": wrote,
        "on_disk_equal": all(torch.equal(on_disk[k], v) for k, v in model.state_dict().items()),
    }


def fail_on_rank1() -> int:
    rank = int(os.environ["RANK"])
    if rank == 1:
        raise ValueError("boom from rank 1")
    return rank


def environment() -> dict[str, str | None]:
    keys = [
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "OMP_NUM_THREADS",
        "TORCHELASTIC_USE_AGENT_STORE",
    ]
    return {k: os.environ.get(k) for k in keys}


def try_to_bind_master_port() -> tuple[int, str]:
    """Join the group, then try to bind MASTER_PORT: the launcher must be holding it."""
    import errno
    import socket

    with kp.distributed() as ctx:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", int(os.environ["MASTER_PORT"])))
                outcome = "bound"
            except OSError as exc:
                outcome = "EADDRINUSE" if exc.errno == errno.EADDRINUSE else repr(exc)
        kp.barrier()
        return ctx.rank, outcome


def _outcome(call: Any) -> Any:
    try:
        return ("ok", call())
    except Exception as exc:  # what each rank saw, to compare across ranks
        return (type(exc).__name__, str(exc), getattr(exc, "by_rank", None))


def ranks_agree_or_all_raise(n_items: int) -> dict[str, Any]:
    """The DDP items of issue 14 on one real group: metric agreement and even shards."""
    from torch.utils.data import DistributedSampler

    ctx = kp.init_distributed()
    rank = ctx.rank
    result: dict[str, Any] = {"rank": rank}
    # Different metric names: every rank raises the same RankMismatchError.
    names = {"loss": 1.0, "acc": 2.0} if rank == 0 else {"loss": 2.0}
    result["names"] = _outcome(lambda: kp.reduce_metrics(names))
    renamed = {"loss": 1.0} if rank == 0 else {"lost": 2.0}
    result["renamed"] = _outcome(lambda: kp.reduce_metrics(renamed))
    result["op"] = _outcome(lambda: kp.reduce_metrics({"x": 1.0}, "sum" if rank else "max"))
    # A bad value on rank 1 only: rank 1's TypeError, and rank 0 hears of it (no hang).
    bad: dict[str, Any] = {"loss": 1.0} if rank == 0 else {"loss": "high"}
    result["bad_value"] = _outcome(lambda: kp.reduce_metrics(bad))
    # The group is still in step afterwards: a correct call gives the right answer.
    result["after"] = kp.reduce_metrics({"loss": 0.5 + rank, "n": 1.0}, "mean")
    # shard: DistributedSampler's indices from the group's own rank and world size; one
    # collective per item never waits for a rank that ran out.
    for drop_last in (False, True):
        for shuffle in (False, True):
            share = kp.shard(range(n_items), shuffle=shuffle, seed=5, drop_last=drop_last)
            share.set_epoch(2)
            sampler = DistributedSampler(
                range(n_items), shuffle=shuffle, seed=5, drop_last=drop_last
            )  # num_replicas and rank from the process group
            sampler.set_epoch(2)
            total = torch.zeros(1)
            for _item in share:
                step = torch.ones(1)
                torch.distributed.all_reduce(step)
                total += step
            result[f"shard drop_last={drop_last} shuffle={shuffle}"] = (
                share.indices,
                list(sampler),
                share.__kshard__,
                float(total),
            )
    kp.shutdown_distributed()
    return result


class RaisesInWorker(torch.utils.data.Dataset[int]):
    """A dataset whose items raise one of kparallel's public exceptions (in a worker)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        if self.kind == "merge":
            # The real thing: a model whose int output the merge rule refuses.
            class Count(nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.lin = nn.Linear(2, 2)

                def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
                    return self.lin(x), int(x.shape[0])

            kp.multi_gpu_model(Count(), devices=["cpu", "cpu"])(torch.randn(4, 2))
        raise kp.RankMismatchError("ranks disagree", by_rank=[["a"], ["b"]])


def group_rank() -> tuple[int, str]:
    """Join the process group (rank 0 listens on MASTER_PORT) and report."""
    with kp.distributed() as ctx:
        kp.barrier()
        return ctx.rank, os.environ["MASTER_PORT"]


def exit_work(folder: str) -> int:
    """Leave work for the worker's exit: an exit handler, unflushed output, a log file."""
    import atexit
    import logging
    import sys

    rank = int(os.environ["RANK"])
    atexit.register(lambda: open(os.path.join(folder, f"atexit{rank}"), "w").close())
    log = logging.getLogger(f"kparallel-test-exit-{rank}")
    log.addHandler(logging.FileHandler(os.path.join(folder, f"log{rank}"), delay=True))
    log.warning("logged by rank %d", rank)
    sys.stdout.write(f"unflushed output of rank {rank}")  # no newline, no flush
    return rank


def ddp_step_and_return() -> int:
    """One DDP step, then return with the model's group threads still alive (DDP holds them)."""
    ctx = kp.init_distributed()
    ddp = kp.wrap_ddp(nn.Linear(4, 1))
    ddp(torch.randn(3, 4)).sum().backward()
    kp.reduce_metrics({"rank": float(ctx.rank)})
    return ctx.rank
