"""multi_gpu_model on CPU replicas: the device-generic path, run for real."""

from __future__ import annotations

import collections
import io

import pytest
import torch
from torch import nn

import kparallel as kp


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))


def cpu(n: int) -> list[str]:
    return ["cpu"] * n


@pytest.mark.parametrize("replicas", [2, 3])
def test_forward_equals_plain_model_on_uneven_batch(replicas: int) -> None:
    model = mlp()
    parallel = kp.multi_gpu_model(model, devices=cpu(replicas))
    x = torch.randn(7, 6)
    out = parallel(x)
    assert out.shape == (7, 4)
    torch.testing.assert_close(out, model(x), rtol=1e-6, atol=1e-6)


def test_split_sizes_balanced_and_fewer_replicas_for_small_batches() -> None:
    assert kp.split_sizes(7, 2) == [4, 3]
    assert kp.split_sizes(7, 3) == [3, 2, 2]
    assert kp.split_sizes(2, 3) == [1, 1]
    assert kp.split_sizes(0, 3) == [0]


class Recorder(nn.Module):
    """Records the chunk size each replica call receives."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        return self.lin(x)


def test_batch_smaller_than_replicas_runs_on_fewer_replicas() -> None:
    model = Recorder()
    parallel = kp.multi_gpu_model(model, devices=cpu(4))
    x = torch.randn(2, 2)
    torch.testing.assert_close(parallel(x), model.lin(x))
    assert model.calls == [1, 1]
    model.calls.clear()
    parallel(torch.randn(9, 2))
    assert model.calls == [3, 2, 2, 2]


@pytest.mark.parametrize("replicas", [2, 3])
def test_template_gradients_equal_single_device_gradients(replicas: int) -> None:
    x, y = torch.randn(7, 6), torch.randn(7, 4)
    plain = mlp()
    nn.functional.mse_loss(plain(x), y).backward()
    template = mlp()
    parallel = kp.multi_gpu_model(template, devices=cpu(replicas))
    nn.functional.mse_loss(parallel(x), y).backward()
    for (name, p), q in zip(template.named_parameters(), plain.parameters(), strict=True):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)


def test_input_gradients_flow_back_through_the_split() -> None:
    model = mlp()
    x = torch.randn(7, 6, requires_grad=True)
    kp.multi_gpu_model(model, devices=cpu(3))(x).pow(2).sum().backward()
    xp = x.detach().clone().requires_grad_()
    model(xp).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, xp.grad)


def test_ten_sgd_steps_through_wrapper_match_plain_model() -> None:
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randn(7, 6, generator=g), torch.randn(7, 4, generator=g)) for _ in range(10)]
    plain, template = mlp(), mlp()
    parallel = kp.multi_gpu_model(template, devices=cpu(2))
    for net in (plain, parallel):
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        for x, y in batches:
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    for p, q in zip(template.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # The trained weights are the template's: it moved away from its initial values.
    assert not torch.allclose(template[0].weight, mlp()[0].weight)


def test_shares_weights_and_state_dict_keys_with_template() -> None:
    template = mlp()
    parallel = kp.multi_gpu_model(template, devices=cpu(2))
    assert list(parallel.state_dict()) == list(template.state_dict())
    assert not any(k.startswith("module.") for k in parallel.state_dict())
    assert [id(p) for p in parallel.parameters()] == [id(p) for p in template.parameters()]
    assert parallel.template is template
    # Loading through the wrapper changes the template; saving the template saves it.
    other = mlp(seed=1)
    parallel.load_state_dict(other.state_dict())
    torch.testing.assert_close(template[0].weight, other[0].weight)
    buf = io.BytesIO()
    torch.save(template.state_dict(), buf)
    buf.seek(0)
    restored = mlp(seed=2)
    restored.load_state_dict(torch.load(buf))
    torch.testing.assert_close(restored[2].bias, other[2].bias)


def test_nested_in_a_parent_module_round_trips_state_dict() -> None:
    parent = nn.Module()
    parent.body = kp.multi_gpu_model(mlp(), devices=cpu(2))
    keys = list(parent.state_dict())
    assert keys == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"]
    fresh = nn.Module()
    fresh.body = kp.multi_gpu_model(mlp(seed=3), devices=cpu(2))
    result = fresh.load_state_dict(parent.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(fresh.body.template[0].weight, parent.body.template[0].weight)


class MultiIO(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(4, 2)

    def forward(
        self,
        pair: tuple[torch.Tensor, torch.Tensor],
        extra: dict[str, torch.Tensor],
        *,
        scale: float = 1.0,
        tag: str = "",
        shift: torch.Tensor | None = None,
    ) -> dict[str, object]:
        u, v = pair
        out = (self.a(u) + self.b(v) + extra["w"]) * scale
        if shift is not None:
            out = out + shift
        return {"out": out, "parts": [u.sum(1), v], "tag": tag}


def test_structures_in_and_out_and_non_tensor_args_to_every_replica() -> None:
    model = MultiIO()
    parallel = kp.multi_gpu_model(model, devices=cpu(3))
    u, v, w = torch.randn(7, 3), torch.randn(7, 4), torch.randn(7, 2)
    shift = torch.tensor(0.5)  # 0-dim: copied to every replica, not split
    got = parallel((u, v), {"w": w}, scale=2.0, tag=None, shift=shift)
    want = model((u, v), {"w": w}, scale=2.0, tag=None, shift=shift)
    assert set(got) == {"out", "parts", "tag"}
    torch.testing.assert_close(got["out"], want["out"])
    torch.testing.assert_close(got["parts"][0], want["parts"][0])
    torch.testing.assert_close(got["parts"][1], v)
    assert isinstance(got["parts"], list)
    assert got["tag"] is None  # None on every replica stays None
    # A string output is not merged silently: the error names where it sits.
    with pytest.raises(kp.MergeError, match=r"output\['tag'\]") as info:
        parallel((u, v), {"w": w}, tag="x")
    assert info.value.path == "output['tag']"


def test_namedtuple_output_keeps_its_type() -> None:
    Out = collections.namedtuple("Out", ["logits", "hidden"])

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> Out:
            h = self.lin(x)
            return Out(h.softmax(-1), h)

    net = Net()
    out = kp.multi_gpu_model(net, devices=cpu(2))(torch.randn(5, 3))
    assert isinstance(out, Out) and out.hidden.shape == (5, 3)


def test_inputs_with_different_batch_sizes_are_refused() -> None:
    parallel = kp.multi_gpu_model(MultiIO(), devices=cpu(2))
    with pytest.raises(ValueError, match=r"args\[0\]\[1\] has 6 rows"):
        parallel((torch.randn(7, 3), torch.randn(6, 4)), {"w": torch.randn(7, 2)})


def test_batchnorm_buffers_follow_first_replica_like_data_parallel() -> None:
    torch.manual_seed(0)
    template = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    reference = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    reference.load_state_dict(template.state_dict())
    parallel = kp.multi_gpu_model(template, devices=cpu(2))
    x = torch.randn(8, 4)
    parallel(x)
    reference(x[:4])  # the first replica's chunk
    bn, ref = template[1], reference[1]
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 1
    # In eval mode the running statistics are used: output equals the plain model.
    parallel.eval()
    assert not template.training and not template[1].training
    torch.testing.assert_close(parallel(x), template(x))


def test_cpu_relocation_and_cpu_merge_false_on_cpu_devices() -> None:
    template = mlp()
    parallel = kp.multi_gpu_model(template, None, False, True, devices=cpu(2))
    assert parallel.cpu_relocation and not parallel.cpu_merge
    assert parallel.output_device == torch.device("cpu")
    assert not parallel.uses_torch_parallel
    x = torch.randn(5, 6)
    torch.testing.assert_close(parallel(x), template(x))
    assert all(p.device.type == "cpu" for p in template.parameters())


def test_no_grad_and_empty_batch_and_attribute_passthrough() -> None:
    template = mlp()
    template.num_classes = 4  # a plain attribute of the template reads through
    parallel = kp.multi_gpu_model(template, devices=cpu(2))
    assert parallel.num_classes == 4
    with torch.no_grad():
        out = parallel(torch.randn(5, 6))
    assert not out.requires_grad
    assert parallel(torch.randn(0, 6)).shape == (0, 4)
    assert "devices=[cpu, cpu]" in repr(parallel)


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        kp.multi_gpu_model("not a model", devices=cpu(2))  # type: ignore[arg-type]
    parallel = kp.multi_gpu_model(mlp(), devices=cpu(2))
    with pytest.raises(TypeError, match="template"):
        kp.multi_gpu_model(parallel, devices=cpu(2))
    with pytest.raises(TypeError, match="cpu_merge"):
        kp.multi_gpu_model(mlp(), cpu_merge="yes", devices=cpu(2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="devices"):
        kp.multi_gpu_model(mlp(), devices="cpu")


def test_to_and_dtype_changes_act_on_the_template() -> None:
    template = mlp()
    parallel = kp.multi_gpu_model(template, devices=cpu(2))
    assert parallel.double() is parallel
    assert template[0].weight.dtype == torch.float64
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(parallel(x), template(x))


def test_parallel_model_validates_its_devices_and_template() -> None:
    with pytest.raises(ValueError, match="at least 2 entries"):
        kp.ParallelModel(mlp(), ["cpu"])
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        kp.ParallelModel("mlp", ["cpu", "cpu"])  # type: ignore[arg-type]
    parallel = kp.ParallelModel(mlp(), ["cpu", torch.device("cpu")])  # strings accepted
    assert parallel.devices == [torch.device("cpu")] * 2
    assert parallel(torch.randn(3, 6)).shape == (3, 4)


def test_unshare_buffers_gives_same_device_replicas_their_own_buffers() -> None:
    # What torch.nn.parallel.replicate returns for devices [cuda:0, cuda:0] when a buffer
    # is broadcast alone: the later replica's buffer *is* the template's storage.
    from kparallel._model import _unshare_buffers

    template = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    first = template
    second = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    second[1]._buffers["num_batches_tracked"] = template[1].num_batches_tracked
    second[1]._buffers["running_mean"] = template[1].running_mean.clone()
    third = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    third[1]._buffers["num_batches_tracked"] = template[1].num_batches_tracked
    devices = [torch.device("cpu"), torch.device("cpu"), torch.device("meta")]
    _unshare_buffers(template, [first, second, third], devices)
    counter = template[1].num_batches_tracked
    assert first[1].num_batches_tracked is counter  # the first replica keeps the original
    assert second[1].num_batches_tracked.data_ptr() != counter.data_ptr()
    assert torch.equal(second[1].num_batches_tracked, counter)
    assert third[1].num_batches_tracked is counter  # another device: left to replicate
    second(torch.randn(4, 3))  # the replica's update no longer reaches the template
    assert int(counter) == 0 and int(second[1].num_batches_tracked) == 1


def test_gpus_accepts_numpy_integers(monkeypatch: pytest.MonkeyPatch) -> None:
    np = pytest.importorskip("numpy")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert kp.resolve_devices(np.int64(2), None) == [
        torch.device("cuda", 0),
        torch.device("cuda", 1),
    ]
    assert kp.resolve_devices([np.int32(1), 0], None) == [
        torch.device("cuda", 1),
        torch.device("cuda", 0),
    ]
    assert kp.resolve_devices(None, [np.int64(1), "cpu"]) == [
        torch.device("cuda", 1),
        torch.device("cpu"),
    ]
    with pytest.raises(ValueError, match=r"gpus=1\) needs gpus >= 2"):
        kp.resolve_devices(np.int64(1), None)


@pytest.mark.slow
def test_gpu_check_script_passes_on_cpu_devices() -> None:
    # tools/gpu_check.py is what runs on a lent GPU machine: keep it working (same checks,
    # generic path) so that a GPU run fails only for GPU reasons.
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.py"
    if not script.exists():
        pytest.skip("tools/gpu_check.py is not part of this checkout")
    run = subprocess.run(
        [sys.executable, str(script), "--devices", "cpu,cpu", "--no-timing", "--budget", "60"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "gpu_check: all checks passed" in run.stdout
    assert run.stdout.count("[ok]") >= 80 and "[FAIL]" not in run.stdout
