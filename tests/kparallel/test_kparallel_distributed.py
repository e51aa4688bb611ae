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


def test_environment_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        kp.init_distributed()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR is not set"):
        kp.init_distributed()
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
