"""torch.distributed helpers: real gloo process groups in real spawned processes."""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import socket
import warnings
from pathlib import Path

import _helpers_kparallel as helpers
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

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
        env={"OMP_NUM_THREADS": "1"},
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
    envs = kp.launch(helpers.environment, 2, env={"OMP_NUM_THREADS": "1"}, timeout=60)
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}
    with pytest.raises(RuntimeError, match=r"rank 1 failed:[\s\S]*boom from rank 1"):
        kp.launch(helpers.fail_on_rank1, 2, env={"OMP_NUM_THREADS": "1"}, timeout=60)


def test_launch_workers_run_exit_handlers_and_flush_their_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Workers end without interpreter shutdown (it races gloo's threads); what a normal
    # exit does for the user must still happen: exit handlers, logging, buffered output.
    assert kp.launch(
        helpers.exit_work, 2, args=(str(tmp_path),), env={"OMP_NUM_THREADS": "1"}, timeout=60
    ) == [0, 1]
    for rank in (0, 1):
        assert (tmp_path / f"atexit{rank}").exists()
        assert (tmp_path / f"log{rank}").read_text() == f"logged by rank {rank}\n"
    out = capfd.readouterr().out
    assert "unflushed output of rank 0" in out and "unflushed output of rank 1" in out


@pytest.mark.slow
def test_ddp_workers_never_abort_at_exit() -> None:
    # Regression: DDP keeps its gloo threads alive after destroy_process_group; a thread
    # freeing its last collective while the interpreter shut down aborted the worker
    # (exit -6, "terminate called without an active exception") in about 3 % of runs.
    for _ in range(12):
        assert kp.launch(
            helpers.ddp_step_and_return, 2, env={"OMP_NUM_THREADS": "1"}, timeout=120
        ) == [0, 1]


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


def sampler_indices(
    n: int, world: int, rank: int, shuffle: bool, seed: int, drop_last: bool, epoch: int
) -> list[int]:
    sampler = DistributedSampler(
        range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def test_shard_gives_distributed_samplers_indices_over_many_combinations() -> None:
    combos = 0
    for n, world, shuffle, drop_last, seed, epoch in itertools.product(
        range(0, 14), range(1, 6), (False, True), (False, True), (0, 7), (0, 3)
    ):
        shares = []
        for rank in range(world):
            share = kp.shard(
                range(n),
                rank=rank,
                world_size=world,
                shuffle=shuffle,
                seed=seed,
                drop_last=drop_last,
            )
            share.set_epoch(epoch)
            want = sampler_indices(n, world, rank, shuffle, seed, drop_last, epoch)
            assert share.indices == want == list(share), (n, world, rank, shuffle, drop_last)
            shares.append(share.indices)
            combos += 1
        # Equal lengths on every rank: one step each, nobody waits for a missing one.
        assert len({len(s) for s in shares}) == 1
        covered = {i for s in shares for i in s}
        if not drop_last:
            assert covered == set(range(n))  # every item at least once (pads repeat)
        else:
            assert len(covered) == sum(map(len, shares)) == n - n % world  # none twice
    assert combos > 3000


def test_shard_matches_the_issue_example_and_torchs_padding() -> None:
    # 5 items on 2 ranks: torch gives rank 1 three items (padded with item 0).
    assert [list(kp.shard(range(5), rank=r, world_size=2)) for r in range(2)] == [
        [0, 2, 4],
        [1, 3, 0],
    ]
    assert [list(kp.shard(range(5), rank=r, world_size=2, drop_last=True)) for r in range(2)] == [
        [0, 2],
        [1, 3],
    ]
    # Fewer items than ranks: torch repeats the list to pad.
    assert [list(kp.shard(range(2), rank=r, world_size=5)) for r in range(5)] == [
        [0],
        [1],
        [0],
        [1],
        [0],
    ]


def test_shard_shuffle_changes_with_epoch_like_the_sampler() -> None:
    shards = [kp.shard(range(10), rank=r, world_size=3, shuffle=True) for r in range(3)]
    first = [s.indices for s in shards]
    for s in shards:
        s.set_epoch(IndexLike())  # type: ignore[arg-type]
    second = [s.indices for s in shards]
    assert first != second
    assert second == [sampler_indices(10, 3, r, True, 0, False, 1) for r in range(3)]
    assert shards[0].epoch == 1 and type(shards[0].epoch) is int


def test_shard_sequence_like_forwards_on_epoch_end_and_pads_equally() -> None:
    seqs = [Batches(7) for _ in range(2)]  # one copy per rank, as in real processes
    shards = [kp.shard(s, rank=r, world_size=2) for r, s in enumerate(seqs)]
    assert all(isinstance(s, kp.ShardedSequence) for s in shards)
    for _epoch in range(2):
        got = [[batch[0] for batch in s] for s in shards]
        assert [len(g) for g in got] == [4, 4]  # equal step counts: batch 0 padded in
        assert sorted(set(got[0] + got[1])) == list(range(7))
        for s in shards:
            s.on_epoch_end()
    assert [s.epochs for s in seqs] == [2, 2]
    assert [s.epoch for s in shards] == [2, 2]


def test_shards_carry_kshard_and_are_never_sharded_twice() -> None:
    share = kp.shard(range(6), rank=1, world_size=3)
    seq_share = kp.shard(Batches(4), rank=0, world_size=2)
    assert share.__kshard__ == (1, 3) and seq_share.__kshard__ == (0, 2)
    for already in (share, seq_share):
        with pytest.raises(ValueError, match=r"already sharded \(its __kshard__ is \("):
            kp.shard(already, rank=0, world_size=2)
        with pytest.raises(ValueError, match="already sharded"):
            kp.ShardedDataset(already, 0, 2)

    class MarkedBySibling(list[int]):
        """What kdata hands out after sharding: marked with the shared protocol."""

        __kshard__ = (0, 2)

    with pytest.raises(ValueError, match=r"__kshard__ is \(0, 2\)"):
        kp.shard(MarkedBySibling([1, 2, 3]), rank=0, world_size=2)
    MarkedBySibling.__kshard__ = None  # type: ignore[assignment]
    assert list(kp.shard(MarkedBySibling([1, 2, 3]), rank=0, world_size=2)) == [1, 3]


def test_shard_accepts_numpy_integers() -> None:
    np = pytest.importorskip("numpy")
    share = kp.shard(range(7), rank=np.int64(1), world_size=np.int32(3), seed=np.int64(4))
    assert (share.rank, share.world_size, share.seed) == (1, 3, 4)
    assert all(type(v) is int for v in (share.rank, share.world_size, share.seed))
    assert share.__kshard__ == (1, 3)
    with pytest.raises(TypeError, match=r"rank must be an int, got 1\.0"):
        kp.shard(range(7), rank=1.0, world_size=3)  # type: ignore[arg-type]


def test_shard_errors() -> None:
    with pytest.raises(TypeError, match="len"):
        kp.shard(iter(range(3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank must be"):
        kp.shard(range(3), rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        kp.shard(range(3), rank=0, world_size=0)
    with pytest.raises(IndexError, match="out of range"):
        kp.shard(range(3), rank=0, world_size=2)[2]
    with pytest.raises(TypeError, match="world_size must be an int"):
        kp.shard(range(3), rank=0, world_size="2")  # type: ignore[arg-type]


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
    assert list(kp.shard(range(5))) == [1, 3, 0]  # before init_distributed: still its share


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
    share = kp.shard(list("abcdefg"), rank=1, world_size=3)  # indices [1, 4, 0]
    assert share[IndexLike()] == "e" and share[-1] == "a"  # type: ignore[index]
    with pytest.raises(TypeError, match="index must be an int"):
        share["1"]  # type: ignore[index]
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 2\), got 2"):
        kp.ShardedDataset(range(4), 2, 2)
    loader = torch.utils.data.DataLoader(share, batch_size=None, shuffle=True)
    assert sorted(loader) == ["a", "b", "e"]


def test_launch_refuses_a_taken_port_before_starting_any_worker() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(
            RuntimeError, match=rf"cannot serve the rendezvous on 127\.0\.0\.1:{taken}"
        ):
            kp.launch(helpers.group_rank, 2, master_port=taken, env={"OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_launch_holds_the_rendezvous_port_itself_while_workers_run() -> None:
    # The race of "pick a free port, let rank 0 bind it later": here the parent binds it
    # before any worker starts (torchrun's agent store), so a worker cannot bind it ...
    ranks = kp.launch(helpers.try_to_bind_master_port, 2, env={"OMP_NUM_THREADS": "1"}, timeout=120)
    assert ranks == [(0, "EADDRINUSE"), (1, "EADDRINUSE")]
    # ... the workers joined it as clients, and the port is released afterwards.
    envs = kp.launch(helpers.environment, 2, env={"OMP_NUM_THREADS": "1"}, timeout=60)
    assert {e["TORCHELASTIC_USE_AGENT_STORE"] for e in envs} == {"True"}
    port = int(envs[0]["MASTER_PORT"])  # type: ignore[arg-type]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as again:
        again.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_launch_sets_omp_num_threads_like_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with pytest.warns(UserWarning, match="Setting OMP_NUM_THREADS environment variable") as rec:
        envs = kp.launch(helpers.environment, 2, timeout=60)
    assert [w.filename for w in rec] == [__file__]  # points at the caller's line
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"1"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice when the user chose a value ...
        envs = kp.launch(helpers.environment, 2, env={"OMP_NUM_THREADS": "3"}, timeout=60)
        assert {e["OMP_NUM_THREADS"] for e in envs} == {"3"}
        one = kp.launch(helpers.environment, IndexLike(), timeout=60)  # type: ignore[arg-type]
        # ... or for one process (nprocs given as a numpy-like integer)
        assert one[0]["OMP_NUM_THREADS"] is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        envs = kp.launch(helpers.environment, 2, timeout=60)
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"2"}


def test_launch_logs_to_the_kparallel_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kparallel")
    assert kp.launch(len, 1, args=("abc",), timeout=60) == [3]
    assert any(
        r.name == "kparallel" and "starting 1 processes" in r.getMessage() for r in caplog.records
    )
    assert logging.getLogger("kparallel").handlers == []  # a library adds no handlers


@pytest.mark.slow
def test_ranks_agree_or_every_rank_raises_the_same_error_on_gloo() -> None:
    ranks = kp.launch(
        helpers.ranks_agree_or_all_raise, 2, args=(5,), env={"OMP_NUM_THREADS": "1"}, timeout=120
    )
    r0, r1 = ranks
    # Different names (or a different number of them): the same error on both ranks.
    for key in ("names", "renamed", "op"):
        assert r0[key][0] == r1[key][0] == "RankMismatchError", (key, r0[key], r1[key])
        assert r0[key][1] == r1[key][1]
        assert "rank 0:" in r0[key][1] and "rank 1:" in r0[key][1]
    assert r0["names"][2] == [(["acc", "loss"], "mean"), (["loss"], "mean")]
    # A bad value on rank 1: rank 1 raises its TypeError, rank 0 a TypeError naming rank 1.
    assert r1["bad_value"][:2] == ("TypeError", "metric 'loss' must be a number, got str")
    assert r0["bad_value"][0] == "TypeError" and "failed on rank 1" in r0["bad_value"][1]
    # The group is still in step: the next call is right on both ranks.
    assert r0["after"] == r1["after"] == {"loss": 1.0, "n": 1.0}
    for drop_last in (False, True):
        for shuffle in (False, True):
            key = f"shard drop_last={drop_last} shuffle={shuffle}"
            for rank, r in enumerate(ranks):
                mine, sampler, mark, steps = r[key]
                assert mine == sampler, key  # the group's DistributedSampler, exactly
                assert mark == (rank, 2)
                assert steps == 2.0 * len(mine)  # every step met by the other rank
            assert len(r0[key][0]) == len(r1[key][0]) == (2 if drop_last else 3)


@pytest.mark.parametrize("exc", [kp.MergeError, kp.RankMismatchError])
def test_public_exceptions_rebuild_from_a_message_and_pickle(exc: type[Exception]) -> None:
    plain = exc("one message")
    assert str(plain) == "one message" and isinstance(plain, ValueError)
    full = (
        kp.MergeError("m", path="output[1]")
        if exc is kp.MergeError
        else kp.RankMismatchError("m", by_rank=[["a"], ["b"]])
    )
    back = pickle.loads(pickle.dumps(full))
    assert type(back) is exc and str(back) == "m"
    assert vars(back) == vars(full) and vars(back)


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    ("kind", "exc"), [("merge", kp.MergeError), ("rank", kp.RankMismatchError)]
)
def test_public_exceptions_keep_their_type_across_a_dataloader_worker(
    context: str, kind: str, exc: type[Exception]
) -> None:
    loader = DataLoader(
        helpers.RaisesInWorker(kind), num_workers=1, multiprocessing_context=context
    )
    with pytest.raises(exc) as info:
        next(iter(loader))
    assert (
        "output[1]" in str(info.value) if kind == "merge" else "ranks disagree" in str(info.value)
    )


def test_rank_set_up_is_logged_on_a_real_one_rank_group(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    for name, value in {
        "WORLD_SIZE": "1",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(kp.free_port()),
    }.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO, logger="kparallel")
    with kp.distributed("gloo") as ctx:
        assert ctx.is_distributed and ctx.backend == "gloo"
        # A one-rank group agrees with itself: the check passes and values come back.
        assert kp.reduce_metrics({"b": 2, "a": torch.tensor(1.0)}) == {"b": 2.0, "a": 1.0}
        assert kp.save_on_rank0({"w": 1}, tmp_path / "w.pt")
    messages = [r.getMessage() for r in caplog.records if r.name == "kparallel"]
    assert messages[0].startswith("rank 0 of 1 (local rank 0) joining the process group")
    assert "backend gloo" in messages[0] and messages[1] == "rank 0 of 1: process group up"
    assert messages[2] == f"save_on_rank0: rank 0 wrote {tmp_path / 'w.pt'}"
    assert not torch.distributed.is_initialized()
