"""kparallel benchmarks: multi_gpu_model's overhead, measured on CPU replicas.

Comparisons (each side by side, interleaved, medians):
- training step of a mid-sized MLP through multi_gpu_model(devices=["cpu", "cpu"]) vs the
  same step on the plain model (issue goal: within 1.3x, i.e. speed-up >= 1/1.3);
- the same step vs a hand-written two-chunk split and torch.cat of the plain model (what
  any single-device split costs, so the wrapper's own overhead shows);
- forward only, wrapper vs plain;
- the split rule (kparallel's split_inputs) vs a bare torch.tensor_split, and the merge
  rule (merge_outputs) vs a bare torch.cat: the cost of the shared rules over the least
  any split/merge can do.
Then the measured split and merge costs for 2, 4 and 8 replicas, in microseconds and as a
fraction of the plain step: the inputs of the scaling model in docs/kparallel.md.

Run: KERAS_BACKEND=torch $BPY tools/bench/bench_kparallel.py [--quick]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _common import Comparison, compare, median_time, print_header
from torch import nn

from kparallel import multi_gpu_model
from kparallel._split import merge_outputs, split_inputs

WIDTH_IN, HIDDEN, CLASSES = 512, 1024, 10


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(WIDTH_IN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, CLASSES),
    )


class HandSplit(nn.Module):
    """Two halves of the batch through one model, concatenated: the least a split costs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.tensor_split(x, 2)
        return torch.cat([self.inner(a), self.inner(b)])


def make_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    return step


def main(quick: bool = False) -> list[Comparison]:
    batch = 256
    # Many short interleaved rounds: on shared cores, bursts of load from other work
    # then spoil a few rounds rather than a whole side of the comparison.
    repeat = 11 if quick else 31
    number = 2 if quick else 3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, WIDTH_IN, generator=g)
    y = torch.randint(0, CLASSES, (batch,), generator=g)
    cpu2 = [torch.device("cpu")] * 2

    print_header(
        f"kparallel: MLP {WIDTH_IN}-{HIDDEN}-{HIDDEN}-{CLASSES}, batch {batch}, "
        f"{torch.get_num_threads()} threads, CPU replicas"
    )
    plain = make_mlp()
    parallel = multi_gpu_model(make_mlp(), devices=["cpu", "cpu"])
    plain_step, parallel_step = make_step(plain, x, y), make_step(parallel, x, y)
    for _ in range(3):  # warm-up: allocator, thread pool
        plain_step()
        parallel_step()
    results = [
        compare(
            "train step: multi_gpu_model(2 CPU replicas) vs plain",
            parallel_step,
            plain_step,
            "plain model",
            repeat=repeat,
            number=number,
            goal=1 / 1.3,
        )
    ]
    # The same split done by hand (two chunks through one model, torch.cat): the cost any
    # single-device split has (smaller matmuls, two gradient contributions summed).
    hand = HandSplit(make_mlp())
    hand_step = make_step(hand, x, y)
    hand_step()
    results.append(
        compare(
            "train step: multi_gpu_model(2 CPU replicas) vs hand-written split+cat",
            parallel_step,
            hand_step,
            "hand split",
            repeat=repeat,
            number=number,
        )
    )
    with torch.no_grad():
        results.append(
            compare(
                "forward (no_grad): multi_gpu_model(2 CPU replicas) vs plain",
                lambda: parallel(x),
                lambda: plain(x),
                "plain model",
                repeat=repeat,
                number=number * 3,
            )
        )
        outs = [plain(part) for part in torch.tensor_split(x, 2)]
    results.append(
        compare(
            "split rule (split_inputs, 2 replicas) vs torch.tensor_split",
            lambda: split_inputs((x,), {}, cpu2)[0],
            lambda: torch.tensor_split(x, 2),
            "tensor_split",
            repeat=repeat,
            number=200,
        )
    )
    results.append(
        compare(
            "merge rule (merge_outputs, 2 replicas) vs torch.cat",
            lambda: merge_outputs(outs, [len(o) for o in outs], torch.device("cpu")),
            lambda: torch.cat(outs),
            "torch.cat",
            repeat=repeat,
            number=200,
        )
    )

    step_s = median_time(plain_step, repeat=repeat, number=number)
    print(f"\nmeasured costs (plain train step {step_s * 1e3:.2f} ms):")
    print(f"{'replicas':>8} {'split us':>9} {'merge us':>9} {'split+merge / step':>19}")
    for n in (2, 4, 8):
        devices = [torch.device("cpu")] * n
        with torch.no_grad():
            parts = [plain(p) for p in torch.tensor_split(x, n)]
        split_s = median_time(lambda d=devices: split_inputs((x,), {}, d), repeat, 200)
        merge_s = median_time(
            lambda p=parts: merge_outputs(p, [len(o) for o in p], torch.device("cpu")), repeat, 200
        )
        print(
            f"{n:>8} {split_s * 1e6:>9.1f} {merge_s * 1e6:>9.1f} "
            f"{(split_s + merge_s) / step_s:>18.2%}"
        )
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
