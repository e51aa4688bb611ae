"""print_summary: exact totals, Keras's columns and widths, shapes from a real forward pass."""

from __future__ import annotations

import re

import pytest
import torch
from _models_kviz import (
    FrozenAndBuffer,
    NestedNet,
    ResidualBlock,
    SharedLayer,
    SmallCNN,
    TiedWeights,
    TwoInputLSTM,
    chain3,
)
from torch import nn

import kviz
from kviz import ForwardError, ModelSummary, print_summary


def quiet(model: nn.Module, **kwargs: object) -> ModelSummary:
    lines: list[str] = []
    result = print_summary(model, print_fn=lines.append, **kwargs)  # type: ignore[arg-type]
    assert lines == list(result.lines)
    return result


def row(result: ModelSummary, name: str) -> kviz.SummaryRow:
    matches = [r for r in result.rows if r.name == name]
    assert len(matches) == 1, [r.name for r in result.rows]
    return matches[0]


# -- totals -------------------------------------------------------------------------------


def test_totals_of_a_chain_and_keras_layout() -> None:
    result = quiet(chain3(), input_size=(2, 4))
    assert (result.total_params, result.trainable_params, result.non_trainable_params) == (
        58,
        58,
        0,
    )
    assert result.param_bytes == 58 * 4
    text = str(result)
    lines = text.splitlines()
    assert lines[0] == 'Model: "Sequential"'
    assert lines[1] == "_" * 65 and lines[3] == "=" * 65
    assert lines[2].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#"]
    # Keras's default positions for a chain: [.45, .85, 1.] of 65 characters.
    assert lines[2].index("Output Shape") == int(65 * 0.45)
    assert lines[2].index("Param #") == int(65 * 0.85)
    assert lines[4].startswith("0 (Linear)") and "[2, 8]" in lines[4] and lines[4].endswith("40")
    assert "Total params: 58 (232.00 B)" in lines
    assert "Trainable params: 58 (232.00 B)" in lines
    assert "Non-trainable params: 0 (0.00 B)" in lines
    assert lines[-1] == "_" * 65
    assert "Connected to" not in text and result.is_chain


def test_frozen_layer_and_buffers() -> None:
    result = quiet(FrozenAndBuffer(), input_size=(4, 10), show_trainable=True)
    assert result.total_params == 152
    assert result.trainable_params == 42
    assert result.non_trainable_params == 110
    assert result.non_trainable_bytes == 440
    assert result.total_buffers == 7 + 10 + 10 + 1
    assert result.buffer_bytes == 7 * 4 + 20 * 4 + 8  # num_batches_tracked is int64
    assert row(result, "frozen").trainable == "N"
    assert row(result, "top").trainable == "Y"
    lines = str(result).splitlines()
    assert lines[2].rstrip().endswith("Trainable")
    assert "Buffers: 28 (116.00 B)" in lines
    assert "Non-trainable params: 110 (440.00 B)" in lines


def test_partially_frozen_container_is_marked_partial() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    model[0][0].weight.requires_grad_(False)
    result = quiet(model, input_size=(1, 2), show_trainable=True)
    assert result.rows[0].trainable == "partial"
    assert (result.trainable_params, result.non_trainable_params) == (8, 4)


def test_shared_layer_counted_once_and_listed_with_both_calls() -> None:
    result = quiet(SharedLayer(), input_size=(1, 3))
    assert result.total_params == 73
    assert not result.is_chain  # a layer called twice is not a simple chain
    shared = row(result, "shared")
    assert shared.params == 42
    # Keras lists every call's inbound tensors: first from inp, then from its own 1st call.
    assert shared.connected_to == ("inp[0][0]", "shared[0][0]")
    assert row(result, "out").connected_to == ("shared[1][0]",)
    assert sum(r.params or 0 for r in result.rows) == 73


def test_tied_weights_counted_once() -> None:
    result = quiet(TiedWeights(), input_data=torch.tensor([[1, 2, 3]]))
    assert result.total_params == 450
    # Counted once, in the first row that holds it; the other row marks it as shared.
    assert row(result, "embed").params == 400
    assert (row(result, "proj").params, row(result, "proj").shared) == (50, 400)
    assert sum(r.params or 0 for r in result.rows) == result.total_params
    proj_line = result.lines.index(next(line for line in result.lines if "proj (" in line))
    assert result.lines[proj_line].split()[-1] == "50"
    assert "+400" in result.lines[proj_line + 1] and "shared" in "".join(
        result.lines[proj_line + 1 : proj_line + 3]
    )


def test_residual_block_rows_and_connections() -> None:
    result = quiet(ResidualBlock(), input_size=(1, 8, 6, 6))
    assert result.total_params == 1184
    assert not result.is_chain
    names = [r.name for r in result.rows]
    assert names == ["x", "conv1", "bn1", "conv2", "bn2", "add"]
    assert row(result, "add").connected_to == ("bn2[0][0]", "x[0][0]")
    assert row(result, "add").type_name == "Tensor.add"
    header = str(result).splitlines()[2]
    assert header.index("Connected to") == int(98 * 0.67)
    assert all(len(line) <= 98 for line in result.lines)


def test_two_inputs_dict_and_list_input_data() -> None:
    tokens = torch.randint(0, 100, (2, 7))
    features = torch.rand(2, 5)
    by_list = quiet(TwoInputLSTM(), input_data=[tokens, features])
    by_dict = quiet(TwoInputLSTM(), input_data={"tokens": tokens, "features": features})
    for result in (by_list, by_dict):
        assert result.total_params == 8171
        assert [r.name for r in result.rows][:2] == ["tokens", "features"]
        assert row(result, "cat").connected_to == ("lstm[0][0]", "meta[0][0]")
        assert row(result, "head").output_shape == "[2, 3]"
        # The LSTM returns (out, (h, c)): every shape is shown.
        assert row(result, "lstm").output_shape == "[2, 7, 32], [1, 2, 32], [1, 2, 32]"


def test_input_size_with_dtypes_for_two_inputs() -> None:
    result = quiet(TwoInputLSTM(), input_size=[(3, 4), (3, 5)], dtypes=[torch.long, torch.float32])
    assert row(result, "tokens").output_shape == "[3, 4]"
    assert row(result, "embed").output_shape == "[3, 4, 16]"


def test_no_input_marks_shapes_unknown() -> None:
    result = quiet(SmallCNN())
    assert result.total_params == 11658
    assert {r.output_shape for r in result.rows} == {"?"}
    assert [r.name for r in result.rows] == ["conv1", "bn1", "pool", "conv2", "fc"]
    assert row(result, "fc").params == 10250


def test_nested_default_shows_top_level_and_expand_nested_shows_all() -> None:
    top = quiet(NestedNet(), input_size=(1, 3, 8, 8))
    assert [r.name for r in top.rows] == ["encoder", "pool", "classifier"]
    assert row(top, "encoder").params == 224 + 1184
    assert top.is_chain
    full = quiet(NestedNet(), input_size=(1, 3, 8, 8), expand_nested=True)
    names = [r.name for r in full.rows]
    assert "encoder.block.conv1" in names and "add" not in names
    assert "encoder.block.add" in names and "classifier.1" in names
    assert row(full, "encoder.block.conv1").level == 2
    assert sum(r.params or 0 for r in full.rows) == full.total_params == 1408 + 36
    assert any(line.startswith("    encoder.block.conv1") for line in full.lines)
    two = quiet(NestedNet(), input_size=(1, 3, 8, 8), depth=2)
    assert "encoder.block" in [r.name for r in two.rows]
    assert "encoder.block.conv1" not in [r.name for r in two.rows]


def test_expand_nested_without_input_uses_the_module_tree() -> None:
    result = quiet(NestedNet(), expand_nested=True)
    names = [r.name for r in result.rows]
    assert names[:4] == ["encoder", "encoder.stem", "encoder.stem.0", "encoder.stem.1"]
    assert sum(r.params or 0 for r in result.rows) == result.total_params


# -- widths -------------------------------------------------------------------------------


@pytest.mark.parametrize("line_length", [30, 50, 65, 120])
def test_no_line_longer_than_line_length(line_length: int) -> None:
    for model, size in ((SmallCNN(), (1, 3, 32, 32)), (ResidualBlock(), (1, 8, 4, 4))):
        result = quiet(model, input_size=size, line_length=line_length, show_trainable=True)
        assert result.line_length == line_length
        assert max(len(line) for line in result.lines) <= line_length
        assert result.lines[1] == "_" * line_length


def test_long_shapes_wrap_instead_of_being_cut() -> None:
    model = nn.Sequential(nn.Identity())
    shape = (2,) + (1,) * 14
    result = quiet(model, input_size=shape, line_length=40)
    seps = [i for i, line in enumerate(result.lines) if line == "=" * 40]
    body = result.lines[seps[0] + 1 : seps[1]]
    assert len(body) > 1  # one row on several lines
    # Joined back, the wrapped cell is the whole shape: nothing was cut.
    cell = " ".join(line[int(40 * 0.45) : int(40 * 0.85) - 1].strip() for line in body)
    assert cell.replace(" ", "") == str(list(shape)).replace(" ", "")
    assert max(len(line) for line in result.lines) <= 40


def test_impossible_input_size_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot create"):
        print_summary(chain3(), input_size=(10**7, 10**7, 10**4))


def test_absolute_and_relative_positions() -> None:
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    relative = quiet(cnn, input_size=(1, 3, 32, 32), line_length=80, positions=[0.5, 0.75, 1.0])
    header = relative.lines[2]
    assert header.index("Output Shape") == 40 and header.index("Param #") == 60
    # Keras 2: absolute positions without line_length keep the 65-wide rulers.
    absolute = quiet(cnn, input_size=(1, 3, 32, 32), positions=[20, 45, 55])
    assert absolute.line_length == 65
    assert absolute.lines[1] == "_" * 65 and absolute.lines[3] == "=" * 65
    assert absolute.lines[2].index("Output Shape") == 20
    assert absolute.lines[2].index("Param #") == 45
    assert max(len(line) for line in absolute.lines) <= 65
    graph = quiet(ResidualBlock(), input_size=(1, 8, 4, 4), positions=[30, 50, 60, 90])
    assert graph.lines[2].index("Connected to") == 60


def test_show_trainable_widens_the_default_table_like_keras() -> None:
    result = quiet(chain3(), input_size=(1, 4), show_trainable=True)
    assert result.line_length == 65 + 11
    assert result.lines[2].index("Trainable") == 65


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"positions": [0.5, 1.0]}, ValueError, "positions must give 3"),
        ({"positions": [0.6, 0.5, 1.0]}, ValueError, "increasing"),
        ({"positions": "abc"}, TypeError, "positions"),
        ({"line_length": 3}, ValueError, "line_length"),
        ({"line_length": 12.5}, TypeError, "line_length"),
        ({"depth": 0}, ValueError, "depth"),
        ({"input_size": (1, 0)}, ValueError, "input_size"),
        ({"input_size": "1,4"}, TypeError, "input_size"),
        ({"input_size": (1, 4), "input_data": torch.zeros(1, 4)}, ValueError, "not both"),
        ({"input_size": (1, 4), "dtypes": [torch.float32, torch.long]}, ValueError, "dtypes"),
        ({"input_data": 3}, TypeError, "input_data"),
        ({"device": "nonsense"}, ValueError, "device"),
        ({"print_fn": 5}, TypeError, "print_fn"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        print_summary(chain3(), **kwargs)  # type: ignore[arg-type]


def test_not_a_module() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        print_summary("model")  # type: ignore[arg-type]


def test_forward_failure_is_a_clear_error_and_restores_the_model() -> None:
    model = SmallCNN()
    model.train()
    with pytest.raises(ForwardError, match=r"SmallCNN failed on the example input.*\(1, 3, 5\)"):
        print_summary(model, input_size=(1, 3, 5), print_fn=lambda s: None)
    assert model.training and all(m.training for m in model.modules())
    assert "forward" not in model.__dict__
    assert not torch.nn.modules.module._global_forward_hooks
    assert not any(m._forward_hooks for m in model.modules())


# -- what the forward pass leaves behind --------------------------------------------------


def test_model_state_untouched() -> None:
    model = NestedNet()
    model.train()
    model.encoder.block.bn1.eval()  # a user's per-module choice must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quiet(model, input_size=(2, 3, 8, 8), expand_nested=True)
    assert model.training and not model.encoder.block.bn1.training
    assert model.encoder.block.bn2.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "forward" not in model.__dict__
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_lazy_modules() -> None:
    model = nn.Sequential(nn.LazyLinear(6), nn.ReLU(), nn.LazyLinear(2))
    before = quiet(model)
    assert before.uninitialized_params == 4 and before.total_params == 0
    assert before.rows[0].params is None
    assert any("Uninitialized lazy parameters: 4" in line for line in before.lines)
    after = quiet(model, input_size=(1, 3))  # the forward pass initializes them
    assert after.uninitialized_params == 0
    assert after.total_params == 3 * 6 + 6 + 6 * 2 + 2
    assert after.rows[0].type_name == "Linear" and after.rows[0].params == 24


def test_result_object() -> None:
    result = quiet(SmallCNN(), input_size=(1, 3, 32, 32))
    assert not result.is_chain  # self.pool is called twice
    assert row(result, "pool").connected_to == ("bn1[0][0]", "conv2[0][0]")
    assert row(result, "fc").connected_to == ("pool[1][0]",)
    result = quiet(SmallCNN(), input_size=(1, 3, 32, 32), input_data=None, expand_nested=True)
    assert str(result) == "\n".join(result.lines)
    assert "total_params=11,658" in repr(result)
    assert result.torchinfo is None  # torchinfo runs only for the mult_adds column
    assert result.rows[1] == kviz.SummaryRow(
        "conv1", "Conv2d", "[1, 8, 32, 32]", 224, "Y", ("x[0][0]",), 0, 0, 224 * 4
    )


def test_default_print_fn_prints(capsys: pytest.CaptureFixture[str]) -> None:
    result = print_summary(chain3())
    assert capsys.readouterr().out == str(result) + "\n"


def test_keyword_tensor_arguments_are_edges() -> None:
    class KW(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Bilinear(3, 3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(input1=h, input2=x)

    result = quiet(KW(), input_size=(1, 3))
    assert row(result, "b").connected_to == ("a[0][0]", "x[0][0]")


def test_unused_module_still_listed() -> None:
    class Partly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.spare = nn.Linear(2, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    result = quiet(Partly(), input_size=(1, 2))
    assert row(result, "spare").output_shape == "(not called)"
    assert sum(r.params or 0 for r in result.rows) == result.total_params == 6 + 15


def test_multihead_attention_is_one_layer() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = nn.LayerNorm(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.attn(x, x, x)
            return self.norm(out + x)

    result = quiet(Attn(), input_size=(1, 5, 8), expand_nested=True)
    names = [r.name for r in result.rows]
    assert names == ["x", "attn", "add", "norm"]
    assert row(result, "attn").params == 4 * 8 * 8 + 4 * 8
    assert re.match(r"\[1, 5, 8\], \[1, 5, 5\]", row(result, "attn").output_shape)


def test_device_argument() -> None:
    result = quiet(chain3(), input_data=torch.rand(2, 4), device="cpu")
    assert result.rows[0].output_shape == "[2, 8]"
    with pytest.raises(ValueError, match="device"):
        print_summary(chain3(), input_data=torch.rand(2, 4), device="nonsense:0")


def test_two_threads_summarize_at_once() -> None:
    # The hooks are process-wide; each trace keeps to its own thread's calls.
    import threading

    results: dict[str, ModelSummary] = {}
    errors: list[BaseException] = []
    jobs = {
        "res": (ResidualBlock(), {"input_size": (1, 8, 4, 4)}),
        "lstm": (
            TwoInputLSTM(),
            {"input_size": [(1, 3), (1, 5)], "dtypes": [torch.long, torch.float32]},
        ),
    }

    def work(name: str) -> None:
        model, kwargs = jobs[name]
        try:
            for _ in range(5):
                results[name] = quiet(model, **kwargs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [r.name for r in results["res"].rows] == ["x", "conv1", "bn1", "conv2", "bn2", "add"]
    assert row(results["lstm"], "cat").connected_to == ("lstm[0][0]", "meta[0][0]")


def test_a_models_own_function_mode_is_left_alone() -> None:
    from torch.overrides import TorchFunctionMode

    seen: list[str] = []

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            seen.append(getattr(func, "__name__", "?"))
            return func(*args, **(kwargs or {}))

    class WithMode(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with Count():
                h = self.a(x)
                y = self.b(h) + h
            return y * 2

    result = quiet(WithMode(), input_size=(1, 3))
    assert "linear" in seen and "add" in seen  # the model's mode saw its calls
    assert row(result, "add").connected_to == ("b[0][0]", "a[0][0]")
    assert torch._C._len_torch_function_stack() == 0


# -- review additions ---------------------------------------------------------------------


def test_a_models_own_parameters_get_a_row() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)  # 16
            self.scale = nn.Parameter(torch.ones(4))  # 4, used in forward, no module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * self.scale

    for kwargs in ({"input_size": (1, 3)}, {}):
        result = quiet(Scaled(), **kwargs)  # type: ignore[arg-type]
        own = row(result, "scaled")
        assert (own.params, own.output_shape) == (4, "(own params)")
        assert sum(r.params or 0 for r in result.rows) == result.total_params == 20
    # A single layer is its own row already: no second one.
    assert [r.name for r in quiet(nn.Linear(2, 2), input_size=(1, 2)).rows] == ["linear"]


def test_dict_input_tensors_are_named_by_their_keys() -> None:
    class DictIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(5, 4)

        def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"sum": self.a(batch["image"]) + self.b(batch["meta"])}

    data = [{"image": torch.rand(2, 3), "meta": torch.rand(2, 5)}]
    result = quiet(DictIn(), input_data=data)
    assert [r.name for r in result.rows][:2] == ["batch.image", "batch.meta"]
    assert row(result, "a").connected_to == ("batch.image[0][0]",)
    assert row(result, "add").output_shape == "[2, 4]"


def test_control_flow_and_a_loop_over_one_module() -> None:
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.step = nn.Linear(4, 4)
            self.skip = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, steps: int = 3) -> torch.Tensor:
            for _ in range(steps):
                x = torch.tanh(self.step(x))
            if x.sum() > 1e9:  # data-dependent branch, not taken
                x = self.skip(x)
            return x

    result = quiet(Loop(), input_data=[torch.rand(1, 4), 3])
    step = row(result, "step")
    assert step.connected_to == ("x[0][0]", "step[0][0]", "step[1][0]")
    assert row(result, "skip").output_shape == "(not called)"
    assert result.total_params == 40


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit's own notices
def test_torch_compile_wrapper_is_summarized_as_its_module() -> None:
    model = chain3()
    compiled = torch.compile(model)  # compiles lazily: nothing happens unless it is called
    result = quiet(compiled, input_size=(1, 4))
    assert result.lines[0] == 'Model: "Sequential"'
    assert [r.name for r in result.rows] == ["0", "1", "2"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script's own notice
def test_whole_torchscript_model_with_and_without_an_example_input() -> None:
    scripted = torch.jit.script(chain3())
    plain = quiet(scripted)  # the module tree: one row per child, with its parameters
    assert [r.params for r in plain.rows] == [40, 0, 18] and plain.total_params == 58
    shaped = quiet(scripted, input_size=(1, 4))  # the forward pass runs; its output is shown
    assert [r.params for r in shaped.rows] == [40, 0, 18]
    assert any(line.startswith("Output shape: [1, 2]") for line in shaped.lines)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"positions": [0.2, 0.5, float("nan")]}, ValueError, "finite"),
        ({"positions": [0.2, 0.5, float("inf")]}, ValueError, "finite"),
        ({"positions": []}, TypeError, "positions"),
        ({"line_length": 12, "show_trainable": True}, ValueError, "extra column"),
    ],
)
def test_more_bad_widths(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        print_summary(chain3(), **kwargs)  # type: ignore[arg-type]


def test_positions_from_a_generator_and_numpy_numbers() -> None:
    import numpy as np

    result = quiet(chain3(), positions=(p for p in (0.5, 0.75, 1.0)), line_length=np.int64(80))
    assert result.lines[2].index("Output Shape") == 40
    assert result.line_length == 80
    shaped = quiet(chain3(), input_size=(np.int64(2), np.int64(4)))
    assert shaped.rows[0].output_shape == "[2, 8]"


def test_print_fn_gets_each_line_once_and_nothing_else_is_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    got: list[str] = []
    result = print_summary(ResidualBlock(), input_size=(1, 8, 4, 4), print_fn=got.append)
    assert got == list(result.lines) and all("\n" not in line for line in got)
    assert capsys.readouterr().out == ""
