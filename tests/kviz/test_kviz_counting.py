"""Issue 12, "the Param # column adds up to the total": one counting rule (every parameter
once, by its storage, in the first row that holds it), whatever the forward pass calls."""

from __future__ import annotations

import pytest
import torch
import torchinfo
from _models_kviz import NestedNet, ResidualBlock, SmallCNN, TiedWeights
from torch import nn
from torch.nn.utils import prune

from kviz import ModelSummary, SummaryRow, print_summary


def quiet(model: nn.Module, **kwargs: object) -> ModelSummary:
    return print_summary(model, print_fn=lambda line: None, **kwargs)  # type: ignore[arg-type]


def row(result: ModelSummary, name: str) -> SummaryRow:
    matches = [r for r in result.rows if r.name == name]
    assert len(matches) == 1, [r.name for r in result.rows]
    return matches[0]


def column_sum(result: ModelSummary) -> int:
    return sum(r.params or 0 for r in result.rows)


def storage(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class FunctionalUse(nn.Module):
    """forward uses a submodule's weight through F.linear: no submodule is called."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(299, 100)  # 30,000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.lin.weight, self.lin.bias)


class ParamList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(100, 100)) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for w in self.weights:
            x = x @ w
        return x


@pytest.mark.parametrize(
    ("model", "size", "total"),
    [(FunctionalUse(), (1, 299), 30_000), (ParamList(), (1, 100), 30_000)],
)
@pytest.mark.parametrize("expand_nested", [False, True])
def test_forward_calling_no_submodule_is_not_counted_twice(
    model: nn.Module, size: tuple[int, ...], total: int, expand_nested: bool
) -> None:
    result = quiet(model, input_size=size, expand_nested=expand_nested)
    assert result.total_params == total == storage(model)
    assert column_sum(result) == total  # was 60,000
    child = row(result, next(iter(dict(model.named_children()))))
    assert (child.params, child.output_shape) == (total, "(not called)")


class PartlyUsedList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(5, 5) for _ in range(12))  # 30 each, 360

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:3]:
            x = layer(x)
        return x


@pytest.mark.parametrize("kwargs", [{}, {"expand_nested": True}, {"depth": 1}])
def test_never_called_nested_modules_are_listed(kwargs: dict[str, object]) -> None:
    model = PartlyUsedList()
    result = quiet(model, input_size=(1, 5), **kwargs)
    assert column_sum(result) == result.total_params == 360  # was 216... of 360
    not_called = [r.name for r in result.rows if r.output_shape == "(not called)"]
    assert not_called == [f"layers.{i}" for i in range(3, 12)]
    assert row(result, "layers.0").output_shape == "[1, 5]"


def test_not_called_inside_an_expanded_block_is_indented_under_it() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.spare = nn.Linear(4, 9)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = nn.Sequential(Block(), nn.ReLU())
    full = quiet(model, input_size=(1, 4), expand_nested=True)
    assert (row(full, "0.spare").output_shape, row(full, "0.spare").level) == ("(not called)", 1)
    assert column_sum(full) == full.total_params == 20 + 45
    top = quiet(model, input_size=(1, 4))  # the block's row counts its whole subtree
    assert row(top, "0").params == 65 and "0.spare" not in [r.name for r in top.rows]


def test_tied_weights_counted_once_and_marked_shared() -> None:
    model = TiedWeights()
    result = quiet(model, input_data=torch.tensor([[1, 2, 3]]), extra_columns=["param_bytes"])
    assert (row(result, "embed").params, row(result, "embed").shared) == (400, 0)
    assert (row(result, "proj").params, row(result, "proj").shared) == (50, 400)
    assert column_sum(result) == result.total_params == 450 == storage(model)
    assert row(result, "proj").param_bytes == 200
    # torchinfo 1.8.0 counts the tied weight twice in its total; kviz does not.
    stats = torchinfo.summary(model, input_data=torch.tensor([[1, 2, 3]]), verbose=0)
    assert stats.total_params != 450


def test_module_shared_by_two_parents_counted_once() -> None:
    act = nn.Linear(4, 4)  # 20, registered in both blocks

    class Parent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Linear(4, 4), act)
            self.b = nn.Sequential(act, nn.Linear(4, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    model = Parent()
    result = quiet(model, input_size=(1, 4), expand_nested=True)
    names = [r.name for r in result.rows]
    assert "a.1" in names and "b.0" in names  # each parent's call under its own name
    assert (row(result, "a.1").params, row(result, "b.0").params) == (20, 0)
    assert row(result, "b.0").shared == 20
    assert column_sum(result) == result.total_params == storage(model) == 20 + 20 + 10


class Pruned(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 10)  # 110
        self.fc2 = nn.Linear(10, 2)  # 22
        prune.l1_unstructured(self.fc1, "weight", amount=0.5)  # 50 of the 100 weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


@pytest.mark.parametrize("kwargs", [{}, {"input_size": (1, 10)}])
def test_pruned_model_rows_and_totals_count_storage(kwargs: dict[str, object]) -> None:
    model = Pruned()
    result = quiet(model, **kwargs)
    assert row(result, "fc1").params == 110  # weight_orig + bias: the storage
    assert column_sum(result) == result.total_params == 132 == storage(model)
    assert result.pruned_params == 50
    assert any("Pruned: 50 of the parameters above" in line for line in result.lines)
    assert result.total_buffers == 100  # the mask is a buffer


def test_a_real_parameter_named_weight_mask_is_a_parameter() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, 3))
            self.weight_mask = nn.Parameter(torch.zeros(3, 3))  # learned, not a pruning mask

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ (self.weight * torch.sigmoid(self.weight_mask))

    model = nn.Sequential(Masked())
    result = quiet(model, input_size=(1, 3))
    assert row(result, "0").params == 18 == result.total_params
    assert result.pruned_params == 0 and result.total_buffers == 0


@pytest.mark.parametrize(
    ("model", "size"),
    [
        (SmallCNN(), (1, 3, 32, 32)),
        (NestedNet(), (1, 3, 8, 8)),
        (ResidualBlock(), (1, 8, 4, 4)),
        (nn.LSTM(4, 8, num_layers=2, batch_first=True), (2, 5, 4)),
    ],
)
@pytest.mark.parametrize("kwargs", [{}, {"expand_nested": True}, {"depth": 2}])
def test_the_column_adds_up_at_every_depth(
    model: nn.Module, size: tuple[int, ...], kwargs: dict[str, object]
) -> None:
    for shaped in (True, False):
        result = quiet(model, **({"input_size": size} if shaped else {}), **kwargs)
        assert column_sum(result) == result.total_params == storage(model)


def test_unregistered_modules_are_counted_and_warned_about() -> None:
    class PlainList(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)  # 10
            self.blocks = [nn.Linear(4, 4), nn.Linear(4, 4)]  # 40, not registered

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    with pytest.warns(UserWarning, match=r"blocks\.0, blocks\.1: 40 parameters") as caught:
        result = quiet(PlainList(), input_size=(1, 4))
    assert caught[0].filename == __file__  # stacklevel: the user's line
    assert [r.name for r in result.rows] == ["blocks.0", "blocks.1", "head"]
    assert column_sum(result) == result.total_params == 50


def test_mult_adds_and_param_bytes_columns_match_torchinfo() -> None:
    model = SmallCNN()
    result = quiet(model, input_size=(1, 3, 32, 32), extra_columns=["mult_adds", "param_bytes"])
    stats = torchinfo.summary(model, input_size=(1, 3, 32, 32), verbose=0)
    assert result.total_mult_adds == stats.total_mult_adds
    assert sum(r.mult_adds or 0 for r in result.rows) == stats.total_mult_adds
    assert sum(r.param_bytes for r in result.rows) == result.param_bytes
    header = result.lines[2]
    assert "Mult-Adds" in header and "Param size" in header
    assert result.torchinfo is not None


def test_mult_adds_never_makes_a_summary_fail() -> None:
    class StrInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor, tag: object) -> torch.Tensor:
            return self.fc(x)

    data = [torch.rand(1, 3), {"tag": "a", "extra": None, "n": 3}]
    with pytest.warns(UserWarning, match="torchinfo could not count Mult-Adds") as caught:
        result = quiet(StrInput(), input_data=data, extra_columns=["mult_adds"])
    assert caught[0].filename == __file__
    assert row(result, "fc").mult_adds is None and row(result, "fc").output_shape == "[1, 2]"
    with pytest.raises(ValueError, match="needs an example input"):
        quiet(StrInput(), extra_columns=["mult_adds"])
    with pytest.raises(ValueError, match="extra_columns"):
        quiet(StrInput(), extra_columns=["flops"])


def test_missing_torchinfo_is_named_only_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torchinfo", None)  # import torchinfo -> ImportError
    with pytest.warns(UserWarning, match=r"needs torchinfo, which is not installed"):
        result = quiet(SmallCNN(), input_size=(1, 3, 32, 32), extra_columns=["mult_adds"])
    assert result.total_params == 11658  # the table itself never needed it
    assert quiet(SmallCNN(), input_size=(1, 3, 32, 32)).total_params == 11658
