"""Issue 12, "Keras's later options and formatting": print_summary's expand_nested,
show_trainable and layer_range, plot_model's show_dtype, show_layer_activations,
show_trainable and layer_range (Keras 2.11+ names, order and meanings), and Keras 2's width
rules."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _models_kviz import NestedNet, SmallCNN, chain3
from torch import nn

from kviz import ModelSummary, model_to_dot, plot_model, print_summary
from kviz._table import wrap


def quiet(model: nn.Module, **kwargs: object) -> ModelSummary:
    return print_summary(model, print_fn=lambda line: None, **kwargs)  # type: ignore[arg-type]


def test_keras_2_11_signatures() -> None:
    summary = list(inspect.signature(print_summary).parameters)
    assert summary[:7] == [
        "model", "line_length", "positions", "print_fn", "expand_nested", "show_trainable",
        "layer_range",
    ]  # fmt: skip
    plot = list(inspect.signature(plot_model).parameters)
    # Keras 2's seven positions (the reference this port follows), then Keras 2.11's
    # additions in its order, show_dtype last.
    assert plot[:11] == [
        "model", "to_file", "show_shapes", "show_layer_names", "rankdir", "expand_nested",
        "dpi", "layer_range", "show_layer_activations", "show_trainable", "show_dtype",
    ]  # fmt: skip
    for fn in (print_summary, plot_model, model_to_dot):
        params = inspect.signature(fn).parameters
        assert params["input_size"].kind is inspect.Parameter.KEYWORD_ONLY


def test_print_summary_keras_options_positionally() -> None:
    lines: list[str] = []
    result = print_summary(
        NestedNet(), 90, None, lines.append, True, True, None, input_size=(1, 3, 8, 8)
    )
    assert "encoder.block.conv1" in [r.name for r in result.rows]  # expand_nested
    assert lines[2].rstrip().endswith("Trainable") and result.line_length == 90


def sequential_names(result: ModelSummary) -> list[str]:
    return [m.group(1) for line in result.lines[4:] if (m := re.match(r"\s*(\S+) \(\w+\)", line))]


def test_layer_range_exact_names_patterns_and_swapped() -> None:
    model = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 2)
    )
    full = quiet(model, input_size=(1, 4))
    part = quiet(model, layer_range=["1", "2"], input_size=(1, 4))
    assert sequential_names(part) == ["1", "2"]
    assert part.total_params == full.total_params  # totals still cover the whole model
    lines: list[str] = []
    print_summary(model, None, None, lines.append, True, False, ["2", "3"], input_size=(1, 4))
    nested = ModelSummary(tuple(lines), (), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, True, 65)
    assert sequential_names(nested) == ["2", "2.0", "2.1", "3"]
    # Patterns: the first match of the start, the last match of the end (re.match).
    assert sequential_names(quiet(model, layer_range=[r"\d", r"[12]"])) == ["0", "1", "2"]
    assert sequential_names(quiet(model, layer_range=["3", "1"])) == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("layer_range", "error", "match"),
    [
        ("0", TypeError, "layer_range must be a list or tuple"),
        (["0"], ValueError, "2 names"),
        ([0, 1], TypeError, "strings only"),
        (["nope", "1"], ValueError, "matches no layer name"),
        (["(", "1"], ValueError, "invalid pattern"),
    ],
)
def test_layer_range_errors(layer_range: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        quiet(chain3(), layer_range=layer_range)
    with pytest.raises(error, match=match):
        model_to_dot(chain3(), layer_range=layer_range)


def test_plot_layer_range_and_keras_positional_order(tmp_path: Path) -> None:
    path = tmp_path / "m.dot"
    plot_model(SmallCNN(), path, True, True, "LR", False, 72.5, ["conv2", "fc"],
               False, False, True, input_size=(1, 3, 32, 32))  # fmt: skip
    text = path.read_text()
    assert "rankdir=LR" in text and "dpi=72.5" in text
    assert "conv2: Conv2d" in text and "fc: Linear" in text and "conv1:" not in text
    assert "float32" in text  # show_dtype, the last positional argument


def test_show_dtype_activations_and_trainable_in_nodes() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.rnn = nn.RNN(4, 4, nonlinearity="relu", batch_first=True)
            self.act = nn.GELU()
            self.frozen = nn.Linear(4, 2)
            self.frozen.requires_grad_(False)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.embed(tokens))
            return self.frozen(self.act(out)).half()

    data = torch.zeros(1, 3, dtype=torch.long)
    plain = model_to_dot(Net(), input_data=data)
    assert "activation:" not in plain and "trainable:" not in plain and "int64" not in plain
    text = model_to_dot(
        Net(), show_dtype=True, show_layer_activations=True, show_trainable=True, input_data=data
    )
    labels = dict(re.findall(r'(n\d+) \[label="([^"]+)"', text))
    rnn = next(v for v in labels.values() if v.startswith("rnn:"))
    assert "activation: relu" in rnn and "trainable: Y" in rnn and "float32" in rnn
    assert "activation: gelu" in next(v for v in labels.values() if v.startswith("act:"))
    assert "trainable: N" in next(v for v in labels.values() if v.startswith("frozen:"))
    assert "int64" in next(v for v in labels.values() if v.startswith("tokens:"))


def test_absolute_positions_without_line_length_keep_keras_rulers() -> None:
    result = quiet(chain3(), positions=[30, 50, 60], input_size=(1, 4))
    assert result.line_length == 65
    assert result.lines[1] == "_" * 65 and result.lines[-1] == "_" * 65
    assert result.lines[2].index("Output Shape") == 30
    graph = quiet(SmallCNN(), positions=[30, 50, 60, 90], input_size=(1, 3, 32, 32))
    assert graph.line_length == 98 and graph.lines[2].index("Connected to") == 60


def test_a_position_past_line_length_prints_as_keras_does() -> None:
    result = quiet(chain3(), line_length=50, positions=[20, 40, 70], input_size=(1, 4))
    assert result.line_length == 50 and result.lines[1] == "_" * 50  # rulers: line_length
    header = result.lines[2]
    assert header.index("Param #") == 40  # the column sits where it was asked to
    row = next(line for line in result.lines if line.startswith("0 (Linear)"))
    assert row.endswith("40") and row.index("40", 30) == 40


@pytest.mark.parametrize("dpi", [96.5, np.float64(150.0), np.int64(72), 300])
def test_dpi_accepts_floats_and_numpy_numbers(dpi: object, tmp_path: Path) -> None:
    text = model_to_dot(chain3(), dpi=dpi)  # type: ignore[arg-type]
    assert f"dpi={float(dpi):g}" in text  # type: ignore[arg-type]


@pytest.mark.parametrize("dpi", [0, -3.0, float("nan"), "96", True])
def test_bad_dpi(dpi: object) -> None:
    with pytest.raises(ValueError, match="dpi must be a positive number"):
        model_to_dot(chain3(), dpi=dpi)  # type: ignore[arg-type]


def test_wrapping_never_breaks_inside_a_word_or_a_shape() -> None:
    assert wrap("[2, 100, 512], [1, 2, 512], [1, 2, 512]", 25) == [
        "[2, 100, 512],",
        "[1, 2, 512], [1, 2, 512]",
    ]
    assert wrap("encoder.block.conv1 (Conv2d)", 22) == ["encoder.block.conv1", "(Conv2d)"]
    lstm = nn.LSTM(512, 512, batch_first=True)
    result = quiet(nn.Sequential(lstm), input_size=(2, 100, 512))
    shape_lines = [line[29:55].strip() for line in result.lines[4:7]]
    for text in shape_lines:
        for shape in re.findall(r"\[[^\]]*\]?", text):
            assert shape.endswith("]"), shape_lines  # every shape whole on its line


@pytest.mark.parametrize(
    "kwargs",
    [
        {"line_length": np.int64(70)},
        {"positions": np.array([0.5, 0.8, 1.0])},
        {"positions": [np.int64(30), np.int64(50), np.int64(65)]},
        {"depth": np.int64(1)},
    ],
)
def test_numpy_numbers_where_ints_are(kwargs: dict[str, object]) -> None:
    result = quiet(NestedNet(), input_size=(np.int64(1), 3, 8, 8), **kwargs)
    assert result.total_params == 1444
    assert model_to_dot(NestedNet(), input_size=(1, 3, 8, 8), depth=np.int64(2)).count("->") > 3


@pytest.mark.parametrize(("depth", "error"), [(1.5, TypeError), (True, TypeError), (0, ValueError)])
def test_bad_depth(depth: object, error: type) -> None:
    with pytest.raises(error, match="depth"):
        quiet(chain3(), depth=depth)
