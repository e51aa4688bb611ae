"""multi_gpu_model's merge rule, BatchNorm rule and view of the template, on CPU replicas.

Each model shape is run through the wrapper on 2 and 3 replicas and compared with the
plain model on the same batch (the answer the wrapper must give, or a clear error).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, NamedTuple

import pytest
import torch
from torch import nn

import kparallel as kp

REPLICAS = [2, 3]


def cpu(n: int) -> list[str]:
    return ["cpu"] * n


def same(a: Any, b: Any) -> None:
    """Equal values of equal types, all the way down."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name))
    else:
        assert a == b


class PerSample(nn.Module):
    """One entry per sample: variable-length tensors, strings and ints."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, Any]:
        h = self.lin(x)
        return {
            "tokens": [h[i, : int(n)] for i, n in enumerate(lengths)],
            "labels": [int(h[i].argmax()) for i in range(len(h))],
            "names": [f"len{int(n)}" for n in lengths],
            "logits": h,
        }


@pytest.mark.parametrize("replicas", REPLICAS)
@pytest.mark.parametrize("rows", [1, 4, 5, 7])
def test_per_sample_lists_equal_the_plain_model(replicas: int, rows: int) -> None:
    model = PerSample()
    x = torch.randn(rows, 4)
    lengths = torch.tensor([1, 3, 2, 4, 0, 2, 1][:rows])
    got = kp.multi_gpu_model(model, devices=cpu(replicas))(x, lengths)
    same(got, model(x, lengths))
    assert len(got["tokens"]) == rows  # not transposed, not one entry per replica


class Detector(nn.Module):
    """Detection style: a list of per-image dicts with a varying number of boxes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.head = nn.Linear(6, 5)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            n = int(image[0].abs() * 10) % 4 + int(image[1] > 0)  # 0..4 boxes per image
            feats = self.head(image).unsqueeze(0).expand(n, 5) * torch.arange(1.0, n + 1)[:, None]
            out.append(
                {"boxes": feats[:, :4], "scores": feats[:, 4].sigmoid(), "labels": torch.arange(n)}
            )
        return out


@pytest.mark.parametrize("replicas", REPLICAS)
def test_detection_list_of_per_image_dicts_for_four_images(replicas: int) -> None:
    model = Detector()
    images = torch.randn(4, 6)
    parallel = kp.multi_gpu_model(model, devices=cpu(replicas))
    got = parallel(images)
    want = model(images)
    assert len(got) == 4  # nn.DataParallel gives 2 results here
    same(got, want)
    # Gradients through the per-image entries reach the template as in the plain model.
    sum(d["boxes"].sum() + d["scores"].sum() for d in got).backward()
    grads = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    model.zero_grad()
    sum(d["boxes"].sum() + d["scores"].sum() for d in want).backward()
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


class Counted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        return self.lin(x), int(x.shape[0])


@pytest.mark.parametrize("replicas", REPLICAS)
def test_an_int_count_is_an_error_naming_its_path_unless_merged_by_the_user(
    replicas: int,
) -> None:
    model = Counted()
    x = torch.randn(4, 3)
    with pytest.raises(kp.MergeError, match=r"cannot merge output\[1\]: a value of type int"):
        kp.multi_gpu_model(model, devices=cpu(replicas))(x)
    calls: list[tuple[str, list[Any], list[int]]] = []

    def add_counts(path: str, values: list[Any], sizes: list[int]) -> Any:
        calls.append((path, values, sizes))
        return sum(values)

    out, count = kp.multi_gpu_model(model, devices=cpu(replicas), merge=add_counts)(x)
    want_out, want_count = model(x)
    assert count == want_count == 4  # the plain model's count, not one replica's
    torch.testing.assert_close(out, want_out)
    sizes = kp.split_sizes(4, replicas)
    assert calls == [("output[1]", sizes, sizes)]  # each replica's count, and its rows


class Leftovers(nn.Module):
    """Outputs the rule cannot merge: the error names each one's path."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        h = self.lin(x)
        extra: Any = {
            "float": 0.5,
            "string": "done",
            "loss": h.pow(2).mean(),
            "weight": self.lin.weight * 1.0,  # no batch dimension: 3 x 3 whatever the rows
            "mixed": [h, 1],
        }[self.kind]
        return {"out": h, "aux": {"extra": extra}}


@pytest.mark.parametrize("replicas", REPLICAS)
@pytest.mark.parametrize(
    ("kind", "path", "reason"),
    [
        ("float", r"output\['aux'\]\['extra'\]", "a value of type float"),
        ("string", r"output\['aux'\]\['extra'\]", "a value of type str"),
        ("loss", r"output\['aux'\]\['extra'\]", "a 0-dim tensor"),
        ("weight", r"output\['aux'\]\['extra'\]", "a tensor without a batch dimension"),
        ("mixed", r"output\['aux'\]\['extra'\]\[1\]", "a value of type int"),
    ],
)
def test_values_without_a_batch_dimension_raise_merge_error(
    replicas: int, kind: str, path: str, reason: str
) -> None:
    parallel = kp.multi_gpu_model(Leftovers(kind), devices=cpu(replicas))
    with pytest.raises(kp.MergeError, match=rf"cannot merge {path}: {reason}") as info:
        parallel(torch.randn(7, 3))
    assert isinstance(info.value, ValueError)
    assert info.value.path is not None and info.value.path.startswith("output['aux']['extra']")
    assert "merge=" in str(info.value)  # says how to fix it


@dataclasses.dataclass
class Batch:
    logits: torch.Tensor
    hidden: tuple[torch.Tensor, torch.Tensor]
    note: None = None


class Pair(NamedTuple):
    a: torch.Tensor
    b: list[torch.Tensor]


class Structures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.lin = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> Any:
        h = self.lin(x)
        counts: collections.defaultdict[str, list[int]] = collections.defaultdict(list)
        counts["h"] = h  # type: ignore[assignment]
        return (
            Batch(h, (h * 2, h.sum(1))),
            Pair(h.relu(), [h, h.tanh()]),  # a list of two heads, read as structure
            collections.OrderedDict(z=h, a=h.sigmoid()),
            counts,
            None,
        )


@pytest.mark.parametrize("replicas", REPLICAS)
@pytest.mark.parametrize("rows", [2, 4, 7])
def test_tuples_namedtuples_dicts_dataclasses_keep_their_structure(
    replicas: int, rows: int
) -> None:
    model = Structures()
    x = torch.randn(rows, 3)
    got = kp.multi_gpu_model(model, devices=cpu(replicas))(x)
    want = model(x)
    same(got, want)
    assert got[3].default_factory is list  # defaultdict kept as such
    # 4 rows on 2 replicas: a list of two heads has the chunk's length (2) yet is kept
    # as a structure, because its entries are batch tensors.
    assert len(got[1].b) == 2 and got[1].b[0].shape == (rows, 4)


def test_ambiguous_list_of_batch_tensors_is_read_as_structure_as_documented() -> None:
    # One entry per sample whose tensors all happen to have the chunk's row count: the
    # documented tie-break reads it as structure (the merge function is the way out).
    class Square(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [self.lin(x)[i].repeat(2, 1) for i in range(len(x))]

    got = kp.multi_gpu_model(Square(), devices=cpu(2))(torch.randn(4, 2))
    assert len(got) == 2 and got[0].shape == (4, 2)


def test_merge_argument_is_checked() -> None:
    with pytest.raises(TypeError, match="merge must be None or a function"):
        kp.multi_gpu_model(Counted(), devices=cpu(2), merge="sum")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="merge must be None or a function"):
        kp.ParallelModel(Counted(), cpu(2), merge=3)  # type: ignore[arg-type]


class Recorder(nn.Module):
    def __init__(self, norm: nn.Module | None = None) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.lin = nn.Linear(4, 6)
        self.norm = norm if norm is not None else nn.BatchNorm1d(6)
        self.chunks: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.chunks.append(int(x.shape[0]))
        return self.norm(self.lin(x))


@pytest.mark.parametrize("replicas", REPLICAS)
@pytest.mark.parametrize("rows", [2, 3, 5, 7])
def test_batchnorm_in_training_never_gets_a_one_row_chunk(replicas: int, rows: int) -> None:
    model = Recorder()
    parallel = kp.multi_gpu_model(model, devices=cpu(replicas))
    out = parallel(torch.randn(rows, 4))  # 1-row chunks would raise "Expected more than 1"
    assert out.shape == (rows, 6)
    assert min(model.chunks) >= 2 and sum(model.chunks) == rows
    assert model.chunks == kp.split_sizes(rows, replicas, min_rows=2)
    # In eval mode running statistics are used: 1-row chunks are fine again.
    model.chunks.clear()
    parallel.eval()
    parallel(torch.randn(5, 4))
    assert model.chunks == kp.split_sizes(5, replicas)


def test_batchnorm_one_replica_batch_equals_plain_model_and_running_stats_rule() -> None:
    torch.manual_seed(4)
    model, plain = Recorder(), Recorder()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(3, 4)
    out = kp.multi_gpu_model(model, devices=cpu(3))(x)  # 3 rows, 3 replicas -> [3]
    torch.testing.assert_close(out, plain(x))
    torch.testing.assert_close(model.norm.running_mean, plain.norm.running_mean)
    # 8 rows on 2 replicas: each normalises with its chunk; the running statistics move
    # by the first chunk only, once per call (as nn.DataParallel keeps them).
    y = torch.randn(8, 4)
    kp.multi_gpu_model(model, devices=cpu(2))(y)
    plain(y[:4])
    torch.testing.assert_close(model.norm.running_mean, plain.norm.running_mean)
    torch.testing.assert_close(model.norm.running_var, plain.norm.running_var)
    assert int(model.norm.num_batches_tracked) == int(plain.norm.num_batches_tracked) == 2


def test_batch_statistics_detection_follows_each_layer() -> None:
    frozen = Recorder()
    frozen.norm.eval()  # a frozen BatchNorm inside a training model: 1-row chunks are fine
    kp.multi_gpu_model(frozen, devices=cpu(3))(torch.randn(5, 4))
    assert frozen.chunks == [2, 2, 1]
    no_stats = Recorder(nn.BatchNorm1d(6, track_running_stats=False)).eval()
    kp.multi_gpu_model(no_stats, devices=cpu(3))(torch.randn(5, 4))  # batch stats in eval
    assert no_stats.chunks == [3, 2]
    plain = Recorder(nn.LayerNorm(6))  # no batch statistics at all
    kp.multi_gpu_model(plain, devices=cpu(3))(torch.randn(5, 4))
    assert plain.chunks == [2, 2, 1]


def test_wrapper_is_a_view_of_the_template() -> None:
    template = nn.Linear(3, 2)  # a template with parameters of its own
    parallel = kp.multi_gpu_model(template, devices=cpu(2))
    # apply() reaches the template itself.
    parallel.apply(lambda m: nn.init.zeros_(m.weight) if isinstance(m, nn.Linear) else None)
    assert torch.count_nonzero(template.weight) == 0
    seen: list[nn.Module] = []
    assert parallel.apply(seen.append) is parallel
    assert seen == list(template.modules())  # every template module once, nothing else
    assert list(parallel.modules()) == [parallel, template]
    assert list(parallel.named_modules()) == [("", parallel), ("", template)]
    assert list(parallel.parameters(recurse=False)) == list(template.parameters(recurse=False))
    assert list(parallel.named_parameters(remove_duplicate=False)) == list(
        template.named_parameters(remove_duplicate=False)
    )
    # train()/eval() and .training: one flag, whichever side sets it.
    template.eval()
    assert parallel.training is False
    parallel.train()
    assert template.training is True
    parallel.training = False
    assert template.training is False
    # Inside a parent: modules() and train() reach the template and its children.
    deep = nn.Sequential(nn.Linear(3, 3), nn.Dropout())
    parent = nn.Module()
    parent.body = kp.multi_gpu_model(deep, devices=cpu(2))
    names = [n for n, _ in parent.named_modules()]
    assert names == ["", "body", "body", "body.0", "body.1"]
    assert deep in list(parent.modules())
    parent.eval()
    assert not deep.training and not deep[1].training and not parent.body.training
    assert [n for n, _ in parent.named_parameters()] == ["body.0.weight", "body.0.bias"]


def test_side_effects_in_forward_run_once_per_replica() -> None:
    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.lin(x)

    model = Counting()
    template_hook: list[int] = []
    inner_hook: list[int] = []
    model.register_forward_hook(lambda m, i, o: template_hook.append(o.shape[0]))
    model.lin.register_forward_hook(lambda m, i, o: inner_hook.append(o.shape[0]))
    parallel = kp.multi_gpu_model(model, devices=cpu(3))
    wrapper_hook: list[int] = []
    parallel.register_forward_hook(lambda m, i, o: wrapper_hook.append(o.shape[0]))
    parallel(torch.randn(7, 2))
    assert model.calls == 3  # once per replica, as under nn.DataParallel
    assert template_hook == inner_hook == [3, 2, 2]
    assert wrapper_hook == [7]  # hooks on the wrapper: once per call
    parallel(torch.randn(1, 2))  # one row: one replica
    assert model.calls == 4 and template_hook[-1] == 1


def test_split_is_logged_at_debug_on_the_kparallel_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parallel = kp.multi_gpu_model(Recorder(), devices=cpu(3))
    caplog.set_level(logging.DEBUG, logger="kparallel")
    parallel(torch.randn(5, 4))
    messages = [r.getMessage() for r in caplog.records if r.name == "kparallel"]
    assert messages == ["multi_gpu_model: 5 rows split [3, 2] over cpu, cpu"]


def test_split_sizes_min_rows_and_numpy_integers() -> None:
    assert kp.split_sizes(5, 3, min_rows=2) == [3, 2]
    assert kp.split_sizes(3, 3, min_rows=2) == [3]
    assert kp.split_sizes(1, 3, min_rows=2) == [1]
    assert kp.split_sizes(0, 3, min_rows=2) == [0]
    np = pytest.importorskip("numpy")
    assert kp.split_sizes(np.int64(7), np.int32(3)) == [3, 2, 2]
    with pytest.raises(TypeError, match=r"batch must be an int, got 7\.5"):
        kp.split_sizes(7.5, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_rows must be >= 1, got 0"):
        kp.split_sizes(7, 3, min_rows=0)


def test_a_call_without_a_batch_runs_once_and_returns_its_output_as_is() -> None:
    class Sampler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 3)
            self.calls = 0

        def forward(self, count: int) -> tuple[torch.Tensor, int, str]:
            self.calls += 1
            torch.manual_seed(count)
            return self.lin(torch.randn(count, 2)), count, "sampled"

    model = Sampler()
    got = kp.multi_gpu_model(model, devices=cpu(3))(5)
    same(got, model(5))
    assert model.calls == 2  # once through the wrapper, once plain
