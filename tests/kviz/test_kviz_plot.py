"""plot_model / model_to_dot: graph structure read back from the DOT, real files rendered by
the real Graphviz `dot`, and the errors a user meets."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from _models_kviz import (
    NestedNet,
    ResidualBlock,
    SharedLayer,
    SmallCNN,
    TwoInputLSTM,
    chain3,
    deep_chain,
)
from torch import nn

from kviz import GraphvizNotFoundError, model_to_dot, plot_model

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")


def graph(dot: str) -> tuple[dict[str, str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(node id -> label, solid edges, dashed 'same module' links) parsed from DOT text."""
    labels = dict(re.findall(r"^\s*(n\d+) \[label=\"(.*?)(?<!\\)\"", dot, re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);$", dot, re.M)
    links = re.findall(r"^\s*(n\d+) -> (n\d+) \[style=dashed", dot, re.M)
    return labels, edges, links


def by_label(labels: dict[str, str], prefix: str) -> str:
    found = [n for n, label in labels.items() if label.startswith(prefix)]
    assert len(found) == 1, (prefix, labels)
    return found[0]


def test_chain_of_three_has_two_edges_without_an_input() -> None:
    labels, edges, links = graph(model_to_dot(chain3()))
    assert len(edges) == 3  # input -> 0 -> 1 -> 2
    dot = model_to_dot(chain3())
    labels = {k: v for k, v in labels.items() if not v.startswith("input")}
    layer_edges = [e for e in edges if e[0] in labels and e[1] in labels]
    assert len(labels) == 3 and len(layer_edges) == 2
    assert [labels[n] for n in sorted(labels, key=lambda n: int(n[1:]))] == [
        "0: Linear",
        "1: ReLU",
        "2: Linear",
    ]
    assert dot.startswith('digraph "Sequential" {') and not links


def test_chain_of_three_traced() -> None:
    labels, edges, _ = graph(model_to_dot(chain3(), input_size=(1, 4)))
    x, a, b, c = (by_label(labels, p) for p in ("input: Input", "0:", "1:", "2:"))
    assert edges == [(x, a), (a, b), (b, c)]


def test_residual_block_has_its_skip_edge() -> None:
    labels, edges, _ = graph(model_to_dot(ResidualBlock(), input_size=(1, 8, 4, 4)))
    x = by_label(labels, "x: Input")
    add = by_label(labels, "add: Tensor.add")
    conv1 = by_label(labels, "conv1: Conv2d")
    bn2 = by_label(labels, "bn2: BatchNorm2d")
    assert (x, add) in edges  # the skip connection
    assert (x, conv1) in edges and (bn2, add) in edges
    assert len(edges) == 6


def test_two_inputs_merge_into_cat() -> None:
    dot = model_to_dot(
        TwoInputLSTM(), input_size=[(2, 7), (2, 5)], dtypes=[torch.long, torch.float]
    )
    labels, edges, _ = graph(dot)
    tokens, features = by_label(labels, "tokens: Input"), by_label(labels, "features: Input")
    cat = by_label(labels, "cat: torch.cat")
    lstm, meta = by_label(labels, "lstm: LSTM"), by_label(labels, "meta: Linear")
    head = by_label(labels, "head: Linear")
    assert {(tokens, by_label(labels, "embed:")), (features, meta)} <= set(edges)
    assert {(lstm, cat), (meta, cat), (cat, head)} <= set(edges)


def test_module_called_twice_appears_twice_and_is_linked() -> None:
    labels, edges, links = graph(model_to_dot(SharedLayer(), input_size=(1, 3)))
    first = by_label(labels, "shared (call 1/2): Linear")
    second = by_label(labels, "shared (call 2/2): Linear")
    assert (first, second) in edges  # the tensor flows from call 1 into call 2
    assert links == [(first, second)]
    assert (second, by_label(labels, "out: Linear")) in edges


def test_expand_nested_draws_clusters() -> None:
    flat = model_to_dot(NestedNet(), input_size=(1, 3, 8, 8))
    assert "subgraph" not in flat
    labels, edges, _ = graph(flat)
    assert sorted(labels.values()) == [
        "classifier: Sequential",
        "encoder: Encoder",
        "pool: AdaptiveAvgPool2d",
        "x: Input",
    ]
    assert len(edges) == 3
    nested = model_to_dot(NestedNet(), input_size=(1, 3, 8, 8), expand_nested=True)
    clusters = re.findall(r'subgraph cluster_\d+ \{\n\s*label="([^"]+)"', nested)
    assert clusters == [
        "encoder: Encoder",
        "encoder.stem: Sequential",
        "encoder.block: ResidualBlock",
        "classifier: Sequential",
    ]
    labels, edges, _ = graph(nested)
    relu = by_label(labels, "encoder.stem.1: ReLU")
    add = by_label(labels, "encoder.block.add: Tensor.add")
    assert (relu, add) in edges and (relu, by_label(labels, "encoder.block.conv1")) in edges
    # The block's conv sits inside the block's cluster, inside the encoder's.
    block = nested.index('label="encoder.block: ResidualBlock"')
    assert nested.index("encoder.block.conv1: Conv2d") > block
    depth2 = model_to_dot(NestedNet(), input_size=(1, 3, 8, 8), depth=2)
    assert "encoder.block: ResidualBlock" in depth2 and "conv1" not in depth2


def test_show_shapes_and_layer_names() -> None:
    dot = model_to_dot(SmallCNN(), input_size=(1, 3, 32, 32), show_shapes=True)
    assert "conv1: Conv2d|{input:|output:}|{{[1, 3, 32, 32]}|{[1, 8, 32, 32]}}" in dot
    plain = model_to_dot(SmallCNN(), input_size=(1, 3, 32, 32), show_layer_names=False)
    labels, _, _ = graph(plain)
    assert "Conv2d" in labels.values() and not any("conv1" in v for v in labels.values())
    assert "MaxPool2d (call 2/2)" in labels.values()


def test_rankdir_and_dpi_reach_the_graph() -> None:
    dot = model_to_dot(chain3(), rankdir="LR", dpi=200)
    assert "rankdir=LR, dpi=200" in dot


def test_plain_sequential_needs_no_input_but_others_do() -> None:
    with pytest.raises(ValueError, match="needs an example input"):
        model_to_dot(SmallCNN())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rankdir": "XY"}, ValueError, "rankdir"),
        ({"dpi": 0}, ValueError, "dpi"),
        ({"graph": "ops"}, ValueError, "graph"),
        ({"depth": -1}, ValueError, "depth"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        model_to_dot(chain3(), **kwargs)  # type: ignore[arg-type]


def test_unknown_extension_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown format 'bmpx'"):
        plot_model(chain3(), to_file=tmp_path / "m.bmpx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_model(chain3(), to_file=tmp_path / "nope" / "m.dot")


# -- rendering ----------------------------------------------------------------------------


@needs_dot
def test_real_png_svg_pdf(tmp_path: Path) -> None:
    png = tmp_path / "cnn.png"
    assert plot_model(SmallCNN(), png, show_shapes=True, input_size=(1, 3, 32, 32)) is None
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 100 and height > 300  # a vertical stack of 9 nodes
    svg = tmp_path / "res.svg"
    plot_model(ResidualBlock(), svg, input_size=(1, 8, 4, 4), rankdir="LR")
    text = svg.read_text()
    assert "<svg" in text and "add: Tensor.add" in text and "conv1: Conv2d" in text
    pdf = tmp_path / "nested.pdf"
    plot_model(NestedNet(), pdf, input_size=(1, 3, 8, 8), expand_nested=True)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.png", "nested.pdf", "res.svg"]


@needs_dot
def test_dpi_changes_the_png_size(tmp_path: Path) -> None:
    sizes = []
    for dpi in (48, 96):
        path = tmp_path / f"m{dpi}.png"
        plot_model(chain3(), path, dpi=dpi)
        sizes.append(int.from_bytes(path.read_bytes()[16:20], "big"))
    assert sizes[1] > 1.6 * sizes[0]


def test_missing_dot_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # a PATH without Graphviz
    target = tmp_path / "model.png"
    with pytest.raises(GraphvizNotFoundError, match="apt-get install graphviz") as info:
        plot_model(chain3(), target)
    assert isinstance(info.value, FileNotFoundError)
    assert "model.dot" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    # .dot needs no Graphviz.
    plot_model(chain3(), tmp_path / "model.dot")
    assert (tmp_path / "model.dot").read_text().startswith('digraph "Sequential"')


@pytest.mark.parametrize(
    "content",
    [b"\x7fELF not really a program", b"#!/no/such/interpreter\n"],
    ids=["not-a-program", "missing-interpreter"],
)
def test_a_dot_that_cannot_run_is_a_graphviz_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dot = bin_dir / "dot"
    dot.write_bytes(content)
    dot.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    target = tmp_path / "out" / "model.png"
    target.parent.mkdir()
    with pytest.raises(GraphvizNotFoundError, match="cannot be run") as info:
        plot_model(chain3(), target)
    assert str(dot) in str(info.value) and "apt-get install graphviz" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert list(target.parent.iterdir()) == []  # nothing half-written


@needs_dot
def test_returns_an_ipython_image_when_ipython_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # IPython is not a dependency of kviz's tests: a minimal stand-in with the two classes
    # plot_model uses (IPython.display.Image and .SVG), recording what they were given.
    pkg = tmp_path / "site" / "IPython"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "display.py").write_text(
        "class Image:\n    def __init__(self, filename):\n        self.filename = filename\n"
        "class SVG(Image):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "IPython" or m.startswith("IPython.")]:
        monkeypatch.delitem(sys.modules, name)
    image = plot_model(chain3(), tmp_path / "a.png")
    assert type(image).__name__ == "Image" and image.filename == str(tmp_path / "a.png")
    svg = plot_model(chain3(), tmp_path / "a.svg")
    assert type(svg).__name__ == "SVG"
    assert plot_model(chain3(), tmp_path / "a.dot") is None


# -- autograd graph -----------------------------------------------------------------------


def test_autograd_graph() -> None:
    dot = model_to_dot(ResidualBlock(), input_size=(1, 8, 4, 4), graph="autograd", rankdir="LR")
    assert "AddBackward0" in dot and "ConvolutionBackward0" in dot
    assert "conv1.weight" in dot and "rankdir=LR" in dot
    with pytest.raises(ValueError, match="needs an example input"):
        model_to_dot(ResidualBlock(), graph="autograd")
    frozen = chain3().requires_grad_(False)
    with pytest.raises(ValueError, match="no output of Sequential has an autograd graph"):
        model_to_dot(frozen, input_size=(1, 4), graph="autograd")


def test_thousand_layer_chain_in_both_modes() -> None:
    model = deep_chain(1000, 16)
    limit = sys.getrecursionlimit()
    layers = model_to_dot(model, input_size=(1, 16))
    assert layers.count(" -> ") == 1000
    autograd = model_to_dot(model, input_size=(1, 16), graph="autograd")
    assert autograd.count("AddmmBackward0") == 1000
    assert sys.getrecursionlimit() == limit  # raised for the walk only


def test_plot_leaves_the_model_as_it_was() -> None:
    model = NestedNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model_to_dot(model, input_size=(2, 3, 8, 8), expand_nested=True)
    model_to_dot(model, input_size=(2, 3, 8, 8), graph="autograd")
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert not torch.nn.modules.module._global_forward_pre_hooks


def test_functional_ops_on_one_tensor_stay_on_the_edge() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.a(x)).view(-1, 2) * 2.0
            return self.b(h[:, :2])

    labels, edges, _ = graph(model_to_dot(Net(), input_size=(1, 4)))
    assert sorted(labels.values()) == ["a: Linear", "b: Linear", "x: Input"]
    assert (by_label(labels, "a:"), by_label(labels, "b:")) in edges


def test_dot_file_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "m.gv"
    target.write_text("old")
    plot_model(chain3(), target)
    assert target.read_text().startswith("digraph")
    assert os.listdir(tmp_path) == ["m.gv"]


def test_nested_sequential_without_input() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), nn.Linear(4, 1))
    flat = model_to_dot(model)
    labels, edges, _ = graph(flat)
    assert sorted(labels.values()) == ["0: Sequential", "1: Linear", "input: Input"]
    assert len(edges) == 2
    nested = model_to_dot(model, expand_nested=True)
    assert 'label="0: Sequential"' in nested
    labels, edges, _ = graph(nested)
    names = {v.split(":")[0]: k for k, v in labels.items()}
    assert edges == [
        (names["input"], names["0.0"]),
        (names["0.0"], names["0.1"]),
        (names["0.1"], names["1"]),
    ]


def test_in_place_and_reflected_operators_are_named_like_torch() -> None:
    class Ops(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Linear(2, 2)
            self.c = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.a(x)
            out += self.b(x)  # in place: Tensor.__iadd__
            return torch.cat([out, self.c(x)], 1) @ torch.ones(4, 1)

    labels, edges, _ = graph(model_to_dot(Ops(), input_size=(1, 2)))
    add = by_label(labels, "add_: Tensor.add_")
    cat = by_label(labels, "cat: torch.cat")
    assert {(by_label(labels, "a:"), add), (by_label(labels, "b:"), add)} <= set(edges)
    assert {(add, cat), (by_label(labels, "c:"), cat)} <= set(edges)


# -- review additions ---------------------------------------------------------------------


@needs_dot
def test_format_from_the_extension_case_and_none(tmp_path: Path) -> None:
    plot_model(chain3(), tmp_path / "upper.PNG")
    assert (tmp_path / "upper.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_model(chain3(), tmp_path / "bare")  # no extension: PNG, as in Keras
    assert (tmp_path / "bare").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_model(chain3(), tmp_path / "m.jpg")
    assert (tmp_path / "m.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit's own notices
def test_dict_input_nodes_and_compiled_or_scripted_models() -> None:
    class DictIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 2)
            self.b = nn.Linear(5, 2)

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.a(batch["image"]) + self.b(batch["meta"])

    data = [{"image": torch.rand(1, 3), "meta": torch.rand(1, 5)}]
    labels, edges, _ = graph(model_to_dot(DictIn(), input_data=data))
    image, meta = by_label(labels, "batch.image: Input"), by_label(labels, "batch.meta: Input")
    assert (image, by_label(labels, "a:")) in edges and (meta, by_label(labels, "b:")) in edges

    compiled = torch.compile(chain3())
    assert model_to_dot(compiled, input_size=(1, 4)).startswith('digraph "Sequential"')
    # A whole TorchScript model is drawn as what can be seen: one layer.
    labels, edges, _ = graph(model_to_dot(torch.jit.script(chain3()), input_size=(1, 4)))
    assert sorted(labels.values()) == [
        "input: Input",
        "recursivescriptmodule: RecursiveScriptModule",
    ]
    assert len(edges) == 1


def test_tracing_leaves_grads_flags_and_user_hooks_alone() -> None:
    from kviz import print_summary

    model = SmallCNN().train()
    model.conv1.requires_grad_(False)
    calls: list[str] = []
    model.fc.register_forward_hook(lambda m, i, o: calls.append("fc"))
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    print_summary(model, input_size=(1, 3, 32, 32), print_fn=lambda line: None)
    model_to_dot(model, input_size=(1, 3, 32, 32))
    model_to_dot(model, input_size=(1, 3, 32, 32), graph="autograd")
    assert calls == ["fc", "fc", "fc"]  # the user's hook ran each time and is still there
    assert len(model.fc._forward_hooks) == 1
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert torch.is_grad_enabled()
