"""Keras's ValueError contract. GPU counts are simulated by monkeypatching
torch.cuda.is_available / device_count (the only mock: no GPU here)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kparallel as kp


def gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def model() -> nn.Module:
    return nn.Linear(2, 2)


@pytest.mark.parametrize("asked", [1, 0, -3])
def test_int_gpus_at_most_one(monkeypatch: pytest.MonkeyPatch, asked: int) -> None:
    gpus(monkeypatch, 4)
    with pytest.raises(ValueError, match=rf"gpus={asked}\).*>= 2.*4 visible GPUs"):
        kp.multi_gpu_model(model(), gpus=asked)


@pytest.mark.parametrize("asked", [[], [0], (1,)])
def test_list_of_length_at_most_one(monkeypatch: pytest.MonkeyPatch, asked: list[int]) -> None:
    gpus(monkeypatch, 4)
    with pytest.raises(ValueError, match="at least 2 GPU ids"):
        kp.multi_gpu_model(model(), gpus=asked)


@pytest.mark.parametrize("count", [0, 1])
def test_gpus_none_with_fewer_than_two_visible(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    gpus(monkeypatch, count)
    with pytest.raises(ValueError, match=r"gpus=None.*at least 2") as info:
        kp.multi_gpu_model(model())
    assert ("no visible GPU" if count == 0 else "1 visible GPU (cuda:0)") in str(info.value)


def test_gpus_none_on_this_machine_is_a_value_error_for_keras_fallback() -> None:
    # Real, unpatched: this CPU-only machine takes the Keras doc's fallback branch.
    if kp.visible_gpus() >= 2:
        pytest.skip("this machine has several GPUs")
    try:
        parallel: nn.Module = kp.multi_gpu_model(model(), cpu_relocation=True)
    except ValueError:
        parallel = model()
    assert isinstance(parallel, nn.Linear)


def test_int_more_than_available(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 2)
    with pytest.raises(ValueError, match=r"gpus=3\) expects .*cuda:2.*2 visible GPUs"):
        kp.multi_gpu_model(model(), gpus=3)


@pytest.mark.parametrize("asked", [[0, 2], [5, 1], [-1, 0]])
def test_gpu_id_that_does_not_exist(monkeypatch: pytest.MonkeyPatch, asked: list[int]) -> None:
    gpus(monkeypatch, 2)
    bad = next(g for g in asked if not 0 <= g < 2)
    with pytest.raises(
        ValueError, match=rf"asks for GPU {bad}, which does not exist.*cuda:0, cuda:1"
    ):
        kp.multi_gpu_model(model(), gpus=asked)


def test_cuda_device_in_devices_that_does_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 1)
    with pytest.raises(ValueError, match="cuda:3, which does not exist"):
        kp.multi_gpu_model(model(), devices=["cuda:0", "cuda:3"])
    gpus(monkeypatch, 0)
    with pytest.raises(ValueError, match="no visible GPU"):
        kp.multi_gpu_model(model(), devices=["cuda:0", "cuda:0"])


def test_devices_of_length_at_most_one_and_both_arguments() -> None:
    with pytest.raises(ValueError, match="at least 2 entries"):
        kp.multi_gpu_model(model(), devices=["cpu"])
    with pytest.raises(ValueError, match="gpus or devices, not both"):
        kp.multi_gpu_model(model(), gpus=2, devices=["cpu", "cpu"])
    with pytest.raises(ValueError, match="not a device"):
        kp.multi_gpu_model(model(), devices=["cpu", "warp-drive"])


def test_duplicate_gpu_ids_and_wrong_types(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 2)
    with pytest.raises(ValueError, match="twice"):
        kp.multi_gpu_model(model(), gpus=[1, 1])
    with pytest.raises(TypeError, match="gpus must"):
        kp.multi_gpu_model(model(), gpus="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="GPU ids as ints"):
        kp.multi_gpu_model(model(), gpus=[0, 1.0])  # type: ignore[list-item]


def test_valid_gpu_requests_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 3)
    cuda = [torch.device("cuda", i) for i in range(3)]
    assert kp.resolve_devices(None, None) == cuda
    assert kp.resolve_devices(2, None) == cuda[:2]
    assert kp.resolve_devices([2, 0], None) == [cuda[2], cuda[0]]
    assert kp.resolve_devices(None, ["cuda", 1, torch.device("cuda:1")]) == [
        cuda[0],
        cuda[1],
        cuda[1],
    ]
