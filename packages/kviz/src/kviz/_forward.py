"""Run the example forward pass: eval mode, no autograd, every module's own training flag
restored afterwards (a user's frozen BatchNorm stays as it was), errors made readable."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ._inputs import ExampleInput
from ._trace import Trace, Tracer

logger = logging.getLogger("kviz")

__all__ = [
    "ForwardError",
    "checked_model",
    "forward_error",
    "gc_paused",
    "kept_modes",
    "trace_model",
]


class ForwardError(ValueError):
    """The model's forward pass failed on the example input.

    A `ValueError`: the example input (or the model) is wrong, not kviz. Built from one
    message, so it pickles and keeps its type across a DataLoader worker.

    Examples:
        >>> import pickle
        >>> error = ForwardError("the forward pass of Net failed")
        >>> type(pickle.loads(pickle.dumps(error))).__name__
        'ForwardError'
    """


def checked_model(model: object) -> nn.Module:
    """``model`` as kviz walks it: a ``torch.compile`` wrapper gives way to the module it
    wraps (compiling would cost seconds and hide the layers from the hooks).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inner = getattr(model, "_orig_mod", None)
    if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module):
        return inner
    return model


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block.

    A trace allocates a few small objects per module call; on models with thousands of
    modules the collector's repeated full passes over them cost more than the trace itself.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def kept_modes(model: nn.Module, modules: list[nn.Module] | None = None) -> Iterator[None]:
    """Restore every module's own training flag after the block (``model.train(flag)``
    would overwrite the flags of modules a user had put in another mode)."""
    flags = [(m, m.training) for m in (model.modules() if modules is None else modules)]
    try:
        yield
    finally:
        for module, flag in flags:
            if module.training is not flag:
                module.training = flag


def forward_error(model: nn.Module, example: ExampleInput, exc: BaseException) -> ForwardError:
    """A ForwardError naming the model and the example input's shapes."""
    args, kwargs = example
    shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args]
    shapes += [
        f"{k}={tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
        for k, v in kwargs.items()
    ]
    message = str(exc)
    if "Traceback of TorchScript" in message:
        # TorchScript's error carries its own traceback: keep its last line, the cause.
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        message = lines[-1] if lines else message
    return ForwardError(
        f"the forward pass of {type(model).__name__} failed on the example input "
        f"(input_size/input_data gave {shapes}): {type(exc).__name__}: {message}"
    )


def trace_model(
    model: nn.Module, example: ExampleInput, *, details: bool = True, functional: bool = False
) -> Trace:
    """One traced forward pass of ``model`` on ``example``: kviz's own trace, no other tool.

    Raises:
        ForwardError: the forward pass raised.
    """
    tracer = Tracer(model, details=details, functional=functional)
    args, kwargs = example
    start = time.perf_counter()
    with kept_modes(model, tracer.modules), torch.no_grad(), tracer.tracing():
        model.eval()
        tracer.add_inputs(args, kwargs)
        try:
            output = model(*args, **kwargs)
        except Exception as exc:
            raise forward_error(model, example, exc) from exc
        tracer.add_outputs(output)
    logger.debug(
        "traced %s: %d nodes in %.1f ms",
        type(model).__name__,
        len(tracer.trace.nodes),
        (time.perf_counter() - start) * 1e3,
    )
    return tracer.trace
