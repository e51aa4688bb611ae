"""Issue 12, "runs on every model whose forward runs": inputs that are not tensors, outputs
that are not tensors, odd attributes, TorchScript parts, 0-d inputs. torchinfo 1.8.0 fails
on each of these after the forward pass succeeded; kviz's own trace must not."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict, defaultdict, namedtuple
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchinfo
from _models_kviz import ScriptedChild
from torch import nn

from kviz import ForwardError, ModelSummary, model_to_dot, plot_model, print_summary

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit notices


def quiet(model: nn.Module, **kwargs: object) -> ModelSummary:
    return print_summary(model, print_fn=lambda line: None, **kwargs)  # type: ignore[arg-type]


def by_name(result: ModelSummary, name: str) -> object:
    return next(r for r in result.rows if r.name == name)


def adds_up(result: ModelSummary, model: nn.Module) -> None:
    assert sum(r.params or 0 for r in result.rows) == result.total_params
    assert result.total_params == sum(p.numel() for p in model.parameters())


def torchinfo_fails(model: nn.Module, **kwargs: object) -> None:
    """The baseline fails on this model (so the test is about something real)."""
    with pytest.raises(Exception):  # any failure of torchinfo's
        torchinfo.summary(model, verbose=0, **kwargs)  # type: ignore[arg-type]


class StringMode(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        return self.a(x) if mode == "a" else self.b(x)


def test_string_input() -> None:
    model = StringMode()
    result = quiet(model, input_data=[torch.rand(2, 3), "b"])
    assert by_name(result, "b").output_shape == "[2, 4]"  # type: ignore[attr-defined]
    assert by_name(result, "a").output_shape == "(not called)"  # type: ignore[attr-defined]
    adds_up(result, model)
    text = model_to_dot(model, input_data=[torch.rand(2, 3), "a"])
    assert "a: Linear" in text and "b: Linear" not in text


Config = namedtuple("Config", ["width", "steps"])


class NamedTupleOfInts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, config: Config) -> torch.Tensor:
        for _ in range(config.steps):
            x = self.step(x[:, : config.width])
        return x


def test_namedtuple_of_ints_input() -> None:
    model = NamedTupleOfInts()
    data = [torch.rand(2, 4), Config(width=4, steps=3)]
    torchinfo_fails(model, input_data=data)
    result = quiet(model, input_data=data)
    step = by_name(result, "step")
    assert step.output_shape == "[2, 4]"  # type: ignore[attr-defined]
    assert step.connected_to == ("x[0][0]", "step[0][0]", "step[1][0]")  # type: ignore[attr-defined]
    adds_up(result, model)


class DictWithStrAndNone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, batch: dict[str, object]) -> torch.Tensor:
        out = self.fc(batch["x"])  # type: ignore[arg-type]
        if batch["mask"] is not None:
            out = out * batch["mask"]  # type: ignore[operator]
        return out if batch["name"] == "plain" else out * 2


@pytest.mark.parametrize("mapping", [dict, OrderedDict, lambda d: defaultdict(list, d)])
def test_dict_holding_str_and_none(mapping: object) -> None:
    model = DictWithStrAndNone()
    batch = mapping({"x": torch.rand(2, 3), "name": "plain", "mask": None})  # type: ignore[operator]
    result = quiet(model, input_data=[batch])
    assert result.is_chain and [r.name for r in result.rows] == ["fc"]
    assert by_name(result, "fc").output_shape == "[2, 2]"  # type: ignore[attr-defined]
    adds_up(result, model)


@dataclass
class Batch:
    image: torch.Tensor
    label: str


class DataclassInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.fc(batch.image)


def test_dataclass_input_moved_and_named_by_field() -> None:
    result = quiet(DataclassInput(), input_data=[Batch(torch.rand(2, 3), "cat")], device="cpu")
    assert by_name(result, "fc").output_shape == "[2, 2]"  # type: ignore[attr-defined]
    text = model_to_dot(DataclassInput(), input_data=[Batch(torch.rand(2, 3), "cat")])
    assert "batch.image: Input" in text


class ReturnsDistribution(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Linear(4, 2)
        self.scale = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.mean(x), nn.functional.softplus(self.scale(x)))


def test_model_returning_a_distribution() -> None:
    model = ReturnsDistribution()
    torchinfo_fails(model, input_size=(3, 4))
    result = quiet(model, input_size=(3, 4))
    assert by_name(result, "mean").output_shape == "[3, 2]"  # type: ignore[attr-defined]
    adds_up(result, model)

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = ReturnsDistribution()

        def forward(self, x: torch.Tensor) -> torch.distributions.Normal:
            return self.policy(x)

    nested = quiet(Head(), input_size=(3, 4))
    assert by_name(nested, "policy").output_shape == "Normal"  # type: ignore[attr-defined]


class ZeroDimAttribute(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.kernel_size = torch.tensor(2)  # a 0-d tensor attribute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(self.kernel_size)
        return nn.functional.max_pool2d(self.conv(x), k)


def test_module_with_a_0d_tensor_attribute() -> None:
    model = nn.Sequential(ZeroDimAttribute(), nn.Flatten())
    result = quiet(model, input_size=(1, 1, 8, 8), expand_nested=True)
    assert by_name(result, "0.conv").output_shape == "[1, 2, 6, 6]"  # type: ignore[attr-defined]
    assert by_name(result, "1").output_shape == "[1, 18]"  # type: ignore[attr-defined]
    adds_up(result, model)


def test_scripted_children_are_one_row_each_with_their_parameters() -> None:
    model = ScriptedChild()
    result = quiet(model, input_size=(2, 3), expand_nested=True)
    assert [r.name for r in result.rows] == ["inp", "fc"]
    fc = by_name(result, "fc")
    assert (fc.type_name, fc.output_shape, fc.params) == ("RecursiveScriptModule", "[2, 2]", 10)  # type: ignore[attr-defined]
    adds_up(result, model)
    labels = model_to_dot(model, input_size=(2, 3), show_shapes=True)
    assert "fc: RecursiveScriptModule" in labels and "[2, 2]" in labels


def test_scripted_children_from_the_command_line(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "kviz", "summary", "_models_kviz:make_scripted_child",
         "--input-size", "2,3"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "fc (RecursiveScriptModule)" in out.stdout and "Traceback" not in out.stderr
    failing = subprocess.run(
        [sys.executable, "-m", "kviz", "summary", "_models_kviz:make_script_fails",
         "--input-size", "2,3"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=120,
    )  # fmt: skip
    assert failing.returncode == 1
    assert "Traceback (most recent call last)" not in failing.stderr
    assert "mat1 and mat2 shapes cannot be multiplied" in failing.stderr
    assert failing.stderr.startswith("kviz: error:") and failing.stderr.count("\n") == 1


def test_whole_scripted_model_with_an_example_input(tmp_path: Path) -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    result = quiet(scripted, input_size=(3, 4))
    assert [r.params for r in result.rows] == [40, 0, 18]
    assert "Output shape: [3, 2]" in str(result)
    with pytest.raises(ForwardError):
        quiet(scripted, input_size=(3, 5))
    plot_model(scripted, tmp_path / "s.dot", input_size=(3, 4))
    assert "RecursiveScriptModule" in (tmp_path / "s.dot").read_text()


class ScalarInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        return self.fc(x) / temperature


def test_0d_input_from_input_size() -> None:
    result = quiet(ScalarInput(), input_size=[(2, 3), []])
    assert [r.name for r in result.rows][:2] == ["x", "temperature"]
    assert by_name(result, "temperature").output_shape == "[]"  # type: ignore[attr-defined]
    assert by_name(result, "div").connected_to == ("fc[0][0]", "temperature[0][0]")  # type: ignore[attr-defined]
    same = quiet(ScalarInput(), input_data=[torch.rand(2, 3), torch.tensor(2.0)])
    assert [r.output_shape for r in same.rows] == [r.output_shape for r in result.rows]
    with pytest.raises(TypeError, match="input_size"):
        quiet(ScalarInput(), input_size=[])
