"""kviz benchmarks: print_summary vs torchinfo.summary, plot graph building vs
torchview.draw_graph, on 1,000 Linear(64, 64) layers and a ResNet-50 (written here:
torchvision's layout, 25.6 M parameters; torchvision itself is not needed).

Run: `hatch run bench:python tools/bench/bench_kviz.py [--quick]` (torchview and torchviz
are compared when installed). Goals (issues 5 and 12): print_summary within 1.2x of
torchinfo.summary's time (goal speed-up 1/1.2), the table built from kviz's own trace;
layer-graph building no slower than torchview (goal 1.0); no RecursionError in either
graph mode on the 1,000-layer chain (checked, printed).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _common import Comparison, compare, print_header
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, inp: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout (25.6 M parameters, 16 bottleneck blocks)."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp, stages = 64, []
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(inp, planes, 2 if j == 0 and i > 0 else 1))
                inp = planes * 4
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _quiet(fn: Callable[[], object]) -> Callable[[], object]:
    """fn with its printing sent to a null stream (both sides print their table)."""

    def run() -> object:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            return fn()

    return run


def main(quick: bool = False) -> list[Comparison]:
    import torchinfo

    from kviz import model_to_dot, print_summary

    try:
        import torchview
    except ImportError:  # pragma: no cover - bench env has it
        torchview = None

    print_header("kviz: print_summary vs torchinfo.summary, graph building vs torchview")
    # One intra-op thread: what is measured is the per-module bookkeeping around the same
    # forward pass, and a single thread keeps the forward itself steady on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(quick, torchinfo, torchview, model_to_dot, print_summary)
    finally:
        torch.set_num_threads(threads)


def _run(
    quick: bool,
    torchinfo: Any,
    torchview: Any,
    model_to_dot: Callable[..., str],
    print_summary: Callable[..., object],
) -> list[Comparison]:
    torch.manual_seed(0)
    chain = nn.Sequential(*[nn.Linear(64, 64) for _ in range(1000)])
    resnet = ResNet50()
    side = 64 if quick else 224
    cases = [
        ("1,000 x Linear(64, 64)", chain, (1, 64)),
        (f"ResNet-50 (25.6M params), 1x3x{side}x{side}", resnet, (1, 3, side, side)),
    ]
    repeat = 5 if quick else 15
    results: list[Comparison] = []
    for label, model, size in cases:
        # Warm-up: the first passes pay for oneDNN kernel creation and page faults.
        with torch.no_grad():
            for _ in range(2):
                model.eval()(torch.rand(size))
        _quiet(lambda m=model, s=size: print_summary(m, input_size=s))()
        results.append(
            compare(
                f"print_summary, {label}",
                _quiet(lambda m=model, s=size: print_summary(m, input_size=s)),
                _quiet(lambda m=model, s=size: torchinfo.summary(m, input_size=s, verbose=1)),
                "torchinfo.summary",
                repeat=repeat,
                goal=1 / 1.2,
            )
        )
        results.append(
            compare(
                f"print_summary vs torchinfo verbose=0 (no table), {label}",
                _quiet(lambda m=model, s=size: print_summary(m, input_size=s)),
                lambda m=model, s=size: torchinfo.summary(m, input_size=s, verbose=0),
                "torchinfo(verbose=0)",
                repeat=repeat,
                goal=1 / 1.2,
            )
        )
        if torchview is not None:
            results.append(
                compare(
                    f"layer graph to DOT, {label}",
                    lambda m=model, s=size: model_to_dot(
                        m, show_shapes=True, expand_nested=True, input_size=s
                    ),
                    lambda m=model, s=size: (
                        torchview.draw_graph(m, input_size=s).visual_graph.source
                    ),
                    "torchview.draw_graph",
                    repeat=repeat,
                    goal=1.0,
                )
            )

    # Autograd graph mode on the 1,000-layer chain: kviz walks the graph iteratively (no
    # RecursionError, no torchviz); torchviz recurses and fails at the default limit.
    # Compared with torchviz given a limit raised by hand, when torchviz is installed.
    layers_dot = model_to_dot(chain, input_size=(1, 64))
    autograd_dot = model_to_dot(chain, input_size=(1, 64), graph="autograd")
    print(
        f"1,000-layer chain: kviz layers: {layers_dot.count(' -> ')} edges; kviz autograd: "
        f"{autograd_dot.count('AddmmBackward0')} AddmmBackward0 nodes, no RecursionError",
        flush=True,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchviz
    except ImportError:
        print("torchviz not installed: autograd comparison skipped", flush=True)
        return results
    x = torch.rand(1, 64)
    limit = sys.getrecursionlimit()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torchviz.make_dot(chain(x))
        plain = "no error"
    except RecursionError:
        plain = "RecursionError"
    print(f"torchviz.make_dot at recursion limit {limit}: {plain}", flush=True)

    def torchviz_raised() -> object:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(20000)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torchviz.make_dot(chain(x), params=dict(chain.named_parameters())).source
        finally:
            sys.setrecursionlimit(old)

    results.append(
        compare(
            "autograd graph to DOT, 1,000 x Linear(64, 64)",
            lambda: model_to_dot(chain, input_size=(1, 64), graph="autograd"),
            torchviz_raised,
            "torchviz (limit raised by hand)",
            repeat=repeat,
        )
    )
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
