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


def environment() -> dict[str, str]:
    keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]
    return {k: os.environ[k] for k in keys}


def group_rank() -> tuple[int, str]:
    """Join the process group (rank 0 listens on MASTER_PORT) and report."""
    with kp.distributed() as ctx:
        kp.barrier()
        return ctx.rank, os.environ["MASTER_PORT"]
