"""Issue 12, "pictures that show what happens": functional calls as nodes (an option), the
model's outputs, modules kept in plain lists, modules shared by several parents, merge nodes
named by their block."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kviz import model_to_dot, plot_model, print_summary


def graph(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    labels = dict(re.findall(r'(n\d+) \[label="([^"]+)"', text))
    edges = re.findall(r"(n\d+) -> (n\d+);", text)
    return labels, edges


def node(labels: dict[str, str], prefix: str) -> str:
    found = [n for n, label in labels.items() if label.startswith(prefix)]
    assert len(found) == 1, (prefix, labels)
    return found[0]


class FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.fc = nn.Linear(1440, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        return self.fc(torch.flatten(x, 1))


def test_functional_calls_drawn_as_nodes_on_request() -> None:
    default = model_to_dot(FunctionalNet(), input_size=(1, 1, 28, 28), show_shapes=True)
    labels, edges = graph(default)
    assert sorted(v.split("|")[0] for v in labels.values()) == [
        "conv1: Conv2d",
        "fc: Linear",
        "x: Input",
    ]  # the Keras-like view stays the default
    text = model_to_dot(
        FunctionalNet(), input_size=(1, 1, 28, 28), show_shapes=True, show_functional=True
    )
    labels, edges = graph(text)
    conv, pool = node(labels, "conv1:"), node(labels, "max_pool2d: F.max_pool2d")
    relu, flat = node(labels, "relu: F.relu"), node(labels, "flatten: torch.flatten")
    assert [(conv, pool), (pool, relu), (relu, flat), (flat, node(labels, "fc:"))] == [
        e for e in edges if e[0] != "n0"
    ]
    # The jump from [1, 10, 24, 24] to [1, 10, 12, 12] has a visible cause.
    assert "{[1, 10, 24, 24]}|{[1, 10, 12, 12]}" in labels[pool]


class LSTMWithState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, (h, _) = self.lstm(x)
        return self.head(out[:, -1]), h


def test_model_outputs_are_drawn_when_they_tell_something() -> None:
    labels, edges = graph(model_to_dot(LSTMWithState(), input_size=(1, 5, 4), show_shapes=True))
    lstm, head = node(labels, "lstm: LSTM"), node(labels, "head: Linear")
    out0, out1 = node(labels, "output.0: Output"), node(labels, "output.1: Output")
    assert (head, out0) in edges and (lstm, out1) in edges  # the returned hidden state
    assert "[1, 1, 8]" in labels[out1]
    # One output from the last layer: no extra node (Keras's picture).
    single, _ = graph(model_to_dot(nn.Sequential(nn.Linear(2, 2)), input_size=(1, 2)))
    assert not any("Output" in v for v in single.values())


class PlainList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = [nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)]  # not registered
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_modules_in_a_plain_list_are_drawn_and_warned_about() -> None:
    with pytest.warns(UserWarning, match="does not register") as caught:
        text = model_to_dot(PlainList(), input_size=(1, 4))
    assert caught[0].filename == __file__
    labels, edges = graph(text)
    chain = [node(labels, p) for p in ("x:", "blocks.0:", "blocks.1:", "blocks.2:", "head:")]
    assert list(itertools.pairwise(chain)) == edges


def test_a_module_shared_by_two_parents_is_shown_as_shared() -> None:
    shared = nn.Linear(4, 4)

    class Parent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Linear(4, 4), shared)
            self.b = nn.Sequential(shared, nn.Linear(4, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    text = model_to_dot(Parent(), input_size=(1, 4), expand_nested=True)
    labels, edges = graph(text)
    first, second = node(labels, "a.1 (call 1/2) (shared)"), node(labels, "b.0 (call 2/2) (shared)")
    assert (first, second) in edges  # the data flow
    assert f"{first} -> {second} [style=dashed" in text  # and the weights they share


class Bottleneck(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(Bottleneck(), Bottleneck())
        self.layer2 = nn.Sequential(Bottleneck())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(x))


def test_merge_nodes_are_named_by_their_block() -> None:
    text = model_to_dot(TinyResNet(), input_size=(1, 4, 8, 8), expand_nested=True)
    labels, _ = graph(text)
    adds = sorted(v for v in labels.values() if "Tensor.add" in v)
    assert adds == [
        "layer1.0.add: Tensor.add",
        "layer1.1.add: Tensor.add",
        "layer2.0.add: Tensor.add",
    ]
    rows = print_summary(
        TinyResNet(), input_size=(1, 4, 8, 8), expand_nested=True, print_fn=lambda line: None
    ).rows
    assert [r.name for r in rows if r.type_name == "Tensor.add"] == [
        "layer1.0.add",
        "layer1.1.add",
        "layer2.0.add",
    ]


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_new_pictures_render_with_the_real_dot(tmp_path: Path) -> None:
    for name, model, size in [
        ("functional", FunctionalNet(), (1, 1, 28, 28)),
        ("lstm", LSTMWithState(), (1, 5, 4)),
        ("resnet", TinyResNet(), (1, 4, 8, 8)),
    ]:
        path = tmp_path / f"{name}.svg"
        plot_model(
            model, path, show_shapes=True, show_dtype=True, expand_nested=True,
            show_layer_activations=True, show_trainable=True, input_size=size,
            show_functional=True,
        )  # fmt: skip
        assert path.read_text().startswith("<?xml")
