"""kparallel: Keras's ``multi_gpu_model`` on ``torch.nn.parallel``, and DDP helpers.

Single machine: ``multi_gpu_model(model, gpus=None, cpu_merge=True, cpu_relocation=False)``
with Keras's contract, on any device list (``devices=["cpu", "cpu"]`` works too).
Beyond one machine: ``init_distributed`` / ``wrap_ddp`` / ``shard`` / ``reduce_metrics`` /
``save_on_rank0`` run one training function under ``torchrun``; ``launch`` does the same
on one machine without ``torchrun``.
"""

from importlib import metadata as _metadata

from ._devices import resolve_devices, visible_gpus
from ._distributed import (
    DistributedContext,
    barrier,
    current_context,
    distributed,
    init_distributed,
    is_main_process,
    reduce_metrics,
    save_on_rank0,
    shutdown_distributed,
    unwrap,
    wrap_ddp,
)
from ._errors import MergeError, RankMismatchError
from ._launch import free_port, launch
from ._model import ParallelModel, multi_gpu_model
from ._shard import ShardedDataset, ShardedSequence, shard
from ._split import split_sizes

__version__ = _metadata.version("kutorch-kparallel")

__all__ = [
    "multi_gpu_model",
    "ParallelModel",
    "MergeError",
    "resolve_devices",
    "visible_gpus",
    "split_sizes",
    "init_distributed",
    "current_context",
    "DistributedContext",
    "distributed",
    "wrap_ddp",
    "unwrap",
    "shard",
    "ShardedDataset",
    "ShardedSequence",
    "reduce_metrics",
    "RankMismatchError",
    "save_on_rank0",
    "is_main_process",
    "barrier",
    "shutdown_distributed",
    "launch",
    "free_port",
]
