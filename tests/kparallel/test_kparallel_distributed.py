"""torch.distributed helpers: real gloo process groups in real spawned processes."""

from __future__ import annotations

import os
from pathlib import Path

import _helpers_kparallel as helpers
import pytest
import torch

import kparallel as kp

STEPS, BATCH = 4, 8


@pytest.mark.slow
def test_two_process_ddp_on_gloo_matches_one_process_on_full_batches(tmp_path: Path) -> None:
    alone_dir, ddp_dir = tmp_path / "alone", tmp_path / "ddp"
    alone_dir.mkdir()
    ddp_dir.mkdir()
    alone = helpers.train_ddp(STEPS, BATCH, str(alone_dir))  # no process group
    assert (alone["world_size"], alone["backend"]) == (1, None)
    ranks = kp.launch(
        helpers.train_ddp,
        2,
        args=(STEPS, BATCH, str(ddp_dir)),
        timeout=120,
    )
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
    for r in ranks:
        for name, value in alone["state"].items():
            torch.testing.assert_close(r["state"][name], value, rtol=1e-5, atol=1e-6)
    # Sharding: every row of every full batch went to exactly one rank.
    seen = sorted(ranks[0]["seen"] + ranks[1]["seen"])
    assert seen == list(range(STEPS * BATCH))
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    # Metric reduction gives the same value on each rank.
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    assert ranks[0]["metrics"]["rank"] == 0.5
    assert [r["metric_order"] for r in ranks] == [["loss", "rank"], ["rank", "loss"]]
    assert ranks[0]["weighted"] == ranks[1]["weighted"] == {"rank": 0.75}  # (0*1 + 1*3) / 4
    # A failed save on rank 0 raises there and, instead of a hang, on the other rank.
    assert [r["failed_save"] for r in ranks] == ["FileNotFoundError", "RuntimeError"]
    assert alone["failed_save"] == "FileNotFoundError"
    assert ranks[0]["rows"] == ranks[1]["rows"] == STEPS * BATCH
    # Rank 0 alone wrote the checkpoint; everyone read it complete after the barrier.
    assert [r["wrote"] for r in ranks] == [True, False]
    assert all(r["on_disk_equal"] for r in ranks)
    assert [p.name for p in ddp_dir.iterdir()] == ["model.pt"]


@pytest.mark.slow
def test_launch_sets_torchrun_environment_and_reports_failures() -> None:
    envs = kp.launch(helpers.environment, 2, timeout=60)
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}
    with pytest.raises(RuntimeError, match=r"rank 1 failed:[\s\S]*boom from rank 1"):
        kp.launch(helpers.fail_on_rank1, 2, timeout=60)


def test_launch_argument_errors() -> None:
    with pytest.raises(ValueError, match="nprocs"):
        kp.launch(helpers.environment, 0)

    def local() -> int:
        return 1

    local.__module__ = "__main__"
    with pytest.raises(ValueError, match="defined in __main__"):
        kp.launch(local, 1)
    with pytest.raises(TypeError, match="picklable"):
        kp.launch(helpers.environment, 1, args=(lambda: 1,))


class Batches:
    """A kdata.Sequence-like object (duck typed): items are batches, with an epoch hook."""

    def __init__(self, n: int) -> None:
        self.order = list(range(n))
        self.epochs = 0

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> list[int]:
        return [self.order[i]] * 2

    def on_epoch_end(self) -> None:
        self.epochs += 1
        self.order = self.order[::-1]  # deterministic: the same on every rank


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 7, 12])
def test_shard_gives_every_item_to_exactly_one_rank(world: int, n: int) -> None:
    for shuffle in (False, True):
        shares = [
            list(kp.shard(range(n), rank=r, world_size=world, shuffle=shuffle, seed=3))
            for r in range(world)
        ]
        assert sorted(x for s in shares for x in s) == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        even = [
            list(kp.shard(range(n), rank=r, world_size=world, shuffle=shuffle, drop_last=True))
            for r in range(world)
        ]
        assert [len(s) for s in even] == [n // world] * world  # equal step counts for DDP
        union = [x for s in even for x in s]
        assert len(set(union)) == len(union) == n - n % world  # no item twice


def test_shard_shuffle_changes_with_epoch_and_drop_last_evens_out() -> None:
    shards = [kp.shard(range(10), rank=r, world_size=3, shuffle=True) for r in range(3)]
    first = [s.indices for s in shards]
    for s in shards:
        s.set_epoch(1)
    second = [s.indices for s in shards]
    assert first != second
    assert sorted(i for share in second for i in share) == list(range(10))
    even = [kp.shard(range(10), rank=r, world_size=3, drop_last=True) for r in range(3)]
    assert [len(s) for s in even] == [3, 3, 3]
    assert len({i for s in even for i in s.indices}) == 9


def test_shard_sequence_like_forwards_on_epoch_end_exactly_once_per_item() -> None:
    seqs = [Batches(7) for _ in range(2)]  # one copy per rank, as in real processes
    shards = [kp.shard(s, rank=r, world_size=2) for r, s in enumerate(seqs)]
    assert all(isinstance(s, kp.ShardedSequence) for s in shards)
    for _epoch in range(2):
        got = [batch[0] for s in shards for batch in s]
        assert sorted(got) == list(range(7))
        for s in shards:
            s.on_epoch_end()
    assert [s.epochs for s in seqs] == [2, 2]


def test_shard_errors() -> None:
    with pytest.raises(TypeError, match="len"):
        kp.shard(iter(range(3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank must be"):
        kp.shard(range(3), rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        kp.shard(range(3), rank=0, world_size=0)
    with pytest.raises(IndexError, match="out of range"):
        kp.shard(range(3), rank=0, world_size=2)[2]


def test_one_process_helpers_without_a_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    with kp.distributed() as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_distributed, ctx.is_main) == (0, 1, False, True)
        model = torch.nn.Linear(2, 2)
        assert kp.wrap_ddp(model) is model
        assert kp.reduce_metrics({"a": 2, "b": torch.tensor([3.0])}) == {"a": 2.0, "b": 3.0}
        assert kp.save_on_rank0({"x": 1}, tmp_path / "c.pt") is True
    assert torch.load(tmp_path / "c.pt") == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kp.save_on_rank0({}, tmp_path / "missing" / "c.pt")
    with pytest.raises(ValueError, match="op must be"):
        kp.reduce_metrics({"a": 1.0}, "median")
    with pytest.raises(ValueError, match="one-element"):
        kp.reduce_metrics({"a": torch.ones(2)})
    parallel = kp.multi_gpu_model(model, devices=["cpu", "cpu"])
    assert kp.unwrap(parallel) is model
    assert kp.unwrap(torch.nn.DataParallel(parallel)) is model
    own = torch.nn.Module()
    own.template = torch.nn.Linear(2, 2)  # a user's submodule that happens to be so named
    assert kp.unwrap(own) is own


def test_environment_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        kp.init_distributed()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR is not set"):
        kp.init_distributed()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"backend='nccl' needs a CUDA GPU for LOCAL_RANK=0"):
            kp.init_distributed("nccl")
    with pytest.raises(TypeError, match="backend must be a str"):
        kp.init_distributed(7)  # type: ignore[arg-type]
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match=r"RANK=5 must lie in \[0, WORLD_SIZE=2\)"):
        kp.init_distributed()
    assert os.environ["WORLD_SIZE"] == "2"


def test_context_without_group_reads_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ctx = kp.current_context()
    assert (ctx.rank, ctx.world_size, ctx.is_distributed, ctx.is_main) == (1, 2, False, False)
    assert list(kp.shard(range(5))) == [1, 3]  # before init_distributed: still its share


def test_helpers_refuse_to_run_alone_under_a_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    # torchrun set WORLD_SIZE=2 but init_distributed() was never called: training or
    # reporting per process would silently be wrong.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match=r"wrap_ddp: WORLD_SIZE=2.*init_distributed"):
        kp.wrap_ddp(torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match=r"reduce_metrics: WORLD_SIZE=2"):
        kp.reduce_metrics({"loss": 1.0})


def test_reduce_metrics_alone_keeps_order_and_checks_weight() -> None:
    assert list(kp.reduce_metrics({"z": 1, "a": 2.5})) == ["z", "a"]
    assert kp.reduce_metrics({"a": 2.0}, weight=3.0) == {"a": 2.0}
    with pytest.raises(ValueError, match="weight must be a number >= 0, got -1"):
        kp.reduce_metrics({"a": 1.0}, weight=-1)
    with pytest.raises(ValueError, match="weight only applies"):
        kp.reduce_metrics({"a": 1.0}, "sum", weight=2.0)
    with pytest.raises(TypeError, match="metric 'a' must be a number"):
        kp.reduce_metrics({"a": "high"})  # type: ignore[dict-item]


def test_save_on_rank0_file_has_plain_torch_save_permissions(tmp_path: Path) -> None:
    kp.save_on_rank0({"w": torch.ones(1)}, tmp_path / "ours.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    mode = (tmp_path / "ours.pt").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.pt").stat().st_mode & 0o777
    kp.save_on_rank0({"w": torch.zeros(1)}, tmp_path / "ours.pt")  # overwrite in place
    assert torch.load(tmp_path / "ours.pt")["w"].item() == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.pt", "plain.pt"]


class IndexLike:
    """Stands for a numpy integer: an int through ``__index__`` only."""

    def __index__(self) -> int:
        return 1


def test_sharded_dataset_accepts_integer_like_indices_and_validates() -> None:
    share = kp.shard(list("abcdefg"), rank=1, world_size=3)
    assert share[IndexLike()] == "e" and share[-1] == "e"  # type: ignore[index]
    with pytest.raises(TypeError, match="index must be an int"):
        share["1"]  # type: ignore[index]
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 2\), got 2"):
        kp.ShardedDataset(range(4), 2, 2)
    loader = torch.utils.data.DataLoader(share, batch_size=None, shuffle=True)
    assert sorted(loader) == ["b", "e"]


@pytest.mark.slow
def test_launch_retries_when_its_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import kparallel._launch as launch_module

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken])
        real = launch_module.free_port
        monkeypatch.setattr(
            launch_module, "free_port", lambda host: next(picks, None) or real(host)
        )
        ranks = kp.launch(helpers.group_rank, 2, timeout=120)
        assert [r[0] for r in ranks] == [0, 1]
        assert ranks[0][1] == ranks[1][1] != str(taken)  # a fresh port on the second try
        with pytest.raises(RuntimeError, match=rf"rank 0 failed:[\s\S]*{taken}"):
            kp.launch(helpers.group_rank, 2, master_port=taken, timeout=120)  # no retry
