"""Turning Keras's ``gpus`` argument (or an explicit device list) into torch devices.

Every refusal here is a ``ValueError`` (or a ``TypeError`` for a wrong type), so the Keras
documentation's ``try: multi_gpu_model(...) except ValueError: model`` fallback works as is.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import cast

import torch

__all__ = ["DeviceLike", "resolve_devices", "visible_gpus"]

DeviceLike = str | int | torch.device


def visible_gpus() -> int:
    """Number of CUDA GPUs this process can see (0 when CUDA is unavailable).

    Returns:
        ``torch.cuda.device_count()``, or 0 without CUDA (``CUDA_VISIBLE_DEVICES`` applies).

    Examples:
        >>> visible_gpus() >= 0
        True
    """
    if not torch.cuda.is_available():
        return 0
    return int(torch.cuda.device_count())


def _available_text(count: int) -> str:
    if count == 0:
        return "this machine has no visible GPU"
    names = ", ".join(f"cuda:{i}" for i in range(count))
    return f"this machine has {count} visible GPU{'s' if count != 1 else ''} ({names})"


def _index(value: object) -> object:
    """``value`` as an int when it is one (numpy integers too), else unchanged."""
    if isinstance(value, bool | str | torch.device):
        return value
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return value


def _from_gpus(gpus: int | Sequence[int] | None) -> list[torch.device]:
    count = visible_gpus()
    gpus = _index(gpus)  # type: ignore[assignment]
    if gpus is None:
        if count < 2:
            raise ValueError(
                "multi_gpu_model(gpus=None) uses every visible GPU and needs at least 2, but "
                f"{_available_text(count)}. Pass devices=[...] (e.g. ['cpu', 'cpu']) to run "
                "the replicas elsewhere, or use the model as is."
            )
        return [torch.device("cuda", i) for i in range(count)]
    if isinstance(gpus, bool) or not isinstance(gpus, int | Sequence) or isinstance(gpus, str):
        raise TypeError(
            f"gpus must be None, an int >= 2 or a list of GPU ids, got {gpus!r} "
            f"({type(gpus).__name__})"
        )
    if isinstance(gpus, int):
        if gpus <= 1:
            raise ValueError(
                f"multi_gpu_model(gpus={gpus}) needs gpus >= 2 (the number of replicas); "
                f"{_available_text(count)}. For one device use the model itself."
            )
        if gpus > count:
            wanted = ", ".join(f"cuda:{i}" for i in range(gpus))
            raise ValueError(
                f"multi_gpu_model(gpus={gpus}) expects the devices {wanted} to exist, but "
                f"{_available_text(count)}. Try reducing gpus."
            )
        return [torch.device("cuda", i) for i in range(gpus)]
    ids = [_index(g) for g in gpus]
    if len(ids) <= 1:
        raise ValueError(
            f"multi_gpu_model(gpus={ids!r}) needs a list of at least 2 GPU ids; "
            f"{_available_text(count)}. For one device use the model itself."
        )
    for gpu in ids:
        if isinstance(gpu, bool) or not isinstance(gpu, int):
            raise TypeError(
                f"gpus must list GPU ids as ints, got {gpu!r} ({type(gpu).__name__}) in {ids!r}"
            )
        if gpu < 0 or gpu >= count:
            raise ValueError(
                f"multi_gpu_model(gpus={ids!r}) asks for GPU {gpu}, which does not exist: "
                f"{_available_text(count)}."
            )
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"multi_gpu_model(gpus={ids!r}) lists a GPU id twice; to put several replicas on "
            "one device pass devices=['cuda:0', 'cuda:0'] instead."
        )
    return [torch.device("cuda", cast(int, i)) for i in ids]


def _one_device(value: object, devices: Sequence[object]) -> torch.device:
    value = _index(value)
    if isinstance(value, bool) or not isinstance(value, str | int | torch.device):
        raise TypeError(
            f"devices must hold str, int or torch.device entries, got {value!r} "
            f"({type(value).__name__}) in {list(devices)!r}"
        )
    try:
        device = torch.device("cuda", value) if isinstance(value, int) else torch.device(value)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"devices holds {value!r}, which is not a device: {exc}") from None
    if device.type == "cuda":
        count = visible_gpus()
        index = 0 if device.index is None else device.index
        if index >= count:
            raise ValueError(
                f"devices={[str(d) for d in devices]!r} asks for cuda:{index}, which does not "
                f"exist: {_available_text(count)}."
            )
        device = torch.device("cuda", index)
    return device


def resolve_devices(
    gpus: int | Sequence[int] | None, devices: Sequence[DeviceLike] | None
) -> list[torch.device]:
    """The replica devices for ``multi_gpu_model``, validated.

    Args:
        gpus: Keras's argument: ``None`` (every visible GPU), an int >= 2 (GPUs 0..n-1) or
            a list of at least two distinct GPU ids.
        devices: torch-native alternative: any list of at least two devices (``"cpu"``,
            ``"cuda:1"``, ``torch.device``, or an int meaning a CUDA index). Repeats allowed
            (several replicas on one device). Excludes ``gpus``.

    Returns:
        The devices, one per replica, CUDA ones with an explicit index.

    Raises:
        ValueError: fewer than two replicas, a GPU that does not exist, or both arguments.
        TypeError: an argument of the wrong type.

    Examples:
        >>> resolve_devices(None, ["cpu", "cpu"])
        [device(type='cpu'), device(type='cpu')]
    """
    if devices is None:
        return _from_gpus(gpus)
    if gpus is not None:
        raise ValueError(f"pass gpus or devices, not both (got gpus={gpus!r}, devices={devices!r})")
    if isinstance(devices, str | torch.device) or not isinstance(devices, Sequence):
        raise TypeError(
            f"devices must be a list of devices such as ['cpu', 'cpu'], got {devices!r}"
        )
    if len(devices) <= 1:
        raise ValueError(
            f"devices={list(devices)!r} needs at least 2 entries (one per replica); "
            "for one device use the model itself."
        )
    return [_one_device(d, devices) for d in devices]
