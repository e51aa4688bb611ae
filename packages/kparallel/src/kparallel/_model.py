"""``multi_gpu_model`` and the module it returns.

Two replica paths share the split and merge rules of ``_split``:

* the ``torch.nn.parallel`` path, for CUDA devices with the template on the first one
  (``cpu_relocation=False``): ``replicate`` copies the template each call, ``Scatter``
  cuts the inputs, ``parallel_apply`` runs the replicas in threads, ``Gather`` merges;
* the generic path, for every other device list (``["cpu", "cpu"]``, or CUDA devices with
  ``cpu_relocation=True``): each replica is the template itself, run with
  ``torch.func.functional_call`` on its own parameters moved (autograd-aware ``.to``) to
  the replica's device; on the template's own device no copy is made at all. Replicas run
  one after another: on one CPU they share the same cores (the kernels already use all of
  them), and CUDA kernels are launched asynchronously, so GPUs still overlap.

Buffers (BatchNorm running statistics and the like) follow ``nn.DataParallel`` on both
paths: every replica normalises with its own chunk's statistics, and only the first
replica's in-place buffer updates are kept (it works on the template's buffers; the
others work on copies that are dropped). While a batch-statistics layer trains, no replica
gets a one-row chunk (fewer replicas are used for that call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from ._devices import DeviceLike, resolve_devices
from ._split import MergeFn, generic_gather, generic_scatter, merge_outputs, split_inputs

__all__ = ["ParallelModel", "multi_gpu_model"]

_CPU = torch.device("cpu")


def _cuda_scatter(
    tensor: torch.Tensor, sizes: list[int], devices: list[torch.device]
) -> Sequence[torch.Tensor]:
    """``torch.nn.parallel``'s Scatter (side-stream copies), with our chunk sizes."""
    # Empty chunks: some torch builds' scatter refuses a chunk of size 0 ("Chunk size must
    # be positive"); an empty batch is one replica, so the generic copy costs nothing.
    if tensor.device.type not in ("cpu", "cuda") or 0 in sizes:
        return generic_scatter(tensor, sizes, devices)
    from torch.nn.parallel._functions import Scatter

    apply: Callable[..., Sequence[torch.Tensor]] = Scatter.apply
    return apply([d.index for d in devices], sizes, 0, tensor)


def _cuda_gather(tensors: list[torch.Tensor], target: torch.device) -> torch.Tensor:
    """``torch.nn.parallel``'s Gather when every piece is on a GPU, else ``cat``.

    One piece needs no gather (a plain ``.to``); an empty piece would make Gather's
    backward scatter a chunk of size 0, which some torch builds refuse.
    """
    if (
        len(tensors) == 1
        or not all(t.device.type == "cuda" for t in tensors)
        or any(t.shape[0] == 0 for t in tensors)
    ):
        return generic_gather(tensors, target)
    from torch.nn.parallel._functions import Gather

    where: str | int = "cpu" if target.type == "cpu" else int(target.index or 0)
    apply: Callable[..., torch.Tensor] = Gather.apply
    return apply(where, 0, *tensors)


class ParallelModel(nn.Module):
    """Data-parallel view of a template module (what ``multi_gpu_model`` returns).

    It owns nothing: its parameters, buffers and submodules *are* the template's (the same
    dictionaries), so an optimizer over ``parallel.parameters()`` trains the template,
    ``parallel.state_dict()`` has the template's keys (no ``module.`` prefix) and
    ``template.state_dict()`` holds the trained weights. It is a view of the template:
    ``train()``/``eval()``/``to()``/``apply()`` act on the template, ``.training`` is the
    template's, ``parameters()``/``buffers()`` are exactly the template's, and
    ``modules()``/``named_modules()`` yield the wrapper, then every module of the
    template (the template itself included, under the same name).

    Side effects in the template's ``forward`` (a call counter, forward hooks registered
    on the template or its submodules) run once per replica that gets rows, as under
    ``nn.DataParallel``; hooks registered on the wrapper run once per call.

    Args:
        template: The model to replicate.
        devices: One device per replica (at least two; ``"cpu"``, ``"cuda:1"``,
            ``torch.device`` or an int CUDA index). The template is not moved (that is
            ``multi_gpu_model``'s job).
        cpu_merge: Merge outputs on the CPU (True) or on ``devices[0]``.
        cpu_relocation: The template lives on the CPU and replicas are made from it.
        merge: Keyword-only: ``merge(path, values, sizes)`` merges the output parts that
            the merge rule cannot (see ``multi_gpu_model``).

    Raises:
        TypeError: ``template`` is not an ``nn.Module``, ``merge`` is not callable, or a
            device has the wrong type.
        ValueError: fewer than two devices, or one that does not exist.

    Examples:
        >>> model = nn.Linear(3, 2)
        >>> parallel = ParallelModel(model, [torch.device("cpu")] * 2)
        >>> parallel(torch.ones(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        template: nn.Module,
        devices: Sequence[DeviceLike],
        *,
        cpu_merge: bool = True,
        cpu_relocation: bool = False,
        merge: MergeFn | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(template, nn.Module):
            raise TypeError(
                f"ParallelModel(template=...) expects a torch.nn.Module, got "
                f"{type(template).__name__}"
            )
        if merge is not None and not callable(merge):
            raise TypeError(
                f"merge must be None or a function merge(path, values, sizes), got {merge!r}"
            )
        devices = resolve_devices(None, devices)
        # object.__setattr__: nn.Module.__setattr__ would register the template as a child,
        # which would prefix every key with "template.".
        object.__setattr__(self, "_template", template)
        object.__setattr__(self, "_devices", list(devices))
        object.__setattr__(self, "cpu_merge", bool(cpu_merge))
        object.__setattr__(self, "cpu_relocation", bool(cpu_relocation))
        object.__setattr__(self, "merge", merge)
        # Share the registries: same parameters, buffers, children, hence same keys.
        object.__setattr__(self, "_parameters", template._parameters)
        object.__setattr__(self, "_buffers", template._buffers)
        object.__setattr__(
            self, "_non_persistent_buffers_set", template._non_persistent_buffers_set
        )
        object.__setattr__(self, "_modules", template._modules)
        uses_parallel = not cpu_relocation and all(d.type == "cuda" for d in self._devices)
        object.__setattr__(self, "_torch_parallel", uses_parallel)

    # -- what it is -------------------------------------------------------------------
    @property
    def template(self) -> nn.Module:
        """The model passed to ``multi_gpu_model`` (shares every weight with this one)."""
        return cast(nn.Module, self.__dict__["_template"])

    @property
    def devices(self) -> list[torch.device]:
        """One device per replica."""
        return list(self.__dict__["_devices"])

    @property
    def output_device(self) -> torch.device:
        """Where outputs are merged: the CPU when ``cpu_merge``, else ``devices[0]``."""
        return _CPU if self.cpu_merge else self.devices[0]

    @property
    def uses_torch_parallel(self) -> bool:
        """True when calls go through replicate/scatter/parallel_apply/gather."""
        return bool(self.__dict__["_torch_parallel"])

    def extra_repr(self) -> str:
        names = ", ".join(str(d) for d in self.devices)
        return (
            f"template={type(self.template).__name__}, devices=[{names}], "
            f"cpu_merge={self.cpu_merge}, cpu_relocation={self.cpu_relocation}"
        )

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("__") or "_template" not in self.__dict__:
                raise
            # Plain attributes of the template (model.num_classes ...) read through.
            return getattr(self.__dict__["_template"], name)

    # -- state that must be the template's ------------------------------------------------
    @property
    def training(self) -> bool:
        """The template's ``training`` flag (one flag: they never drift apart)."""
        template = self.__dict__.get("_template")
        if template is None:  # during nn.Module.__init__
            return bool(self.__dict__.get("_training_before_template", True))
        return bool(template.training)

    @training.setter
    def training(self, mode: bool) -> None:
        template = self.__dict__.get("_template")
        if template is None:
            self.__dict__["_training_before_template"] = mode
        else:
            template.training = mode

    def train(self, mode: bool = True) -> ParallelModel:
        """Set training mode on the template and all its submodules (as ``nn.Module``)."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) expects a bool, got {mode!r}")
        self.template.train(mode)
        return self

    def apply(self, fn: Callable[[nn.Module], None]) -> ParallelModel:
        """``template.apply(fn)``: ``fn`` visits every module of the template, once each."""
        self.template.apply(fn)
        return self

    def named_modules(
        self,
        memo: set[nn.Module] | None = None,
        prefix: str = "",
        remove_duplicate: bool = True,
    ) -> Iterator[tuple[str, nn.Module]]:
        """The wrapper, then the template's ``named_modules`` under the same prefix."""
        if memo is None:
            memo = set()
        if self not in memo:
            if remove_duplicate:
                memo.add(self)
            yield prefix, self
        yield from self.template.named_modules(memo, prefix, remove_duplicate)

    def _named_members(self, *args: Any, **kwargs: Any) -> Any:
        # parameters(), buffers() and their named forms: exactly the template's.
        members: Callable[..., Any] = self.template._named_members
        return members(*args, **kwargs)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        apply: Callable[..., Any] = self.template._apply
        apply(fn, recurse)
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The template's ``state_dict`` (same keys, same tensors)."""
        return self.template.state_dict(*args, **kwargs)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load into the template (it is the one holding the weights)."""
        return self.template.load_state_dict(state_dict, strict=strict, assign=assign)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        self.template._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.template._load_from_state_dict(*args, **kwargs)

    # -- the call ---------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Split the batch, run the replicas, merge their outputs (see the module doc)."""
        if self.uses_torch_parallel:
            return self._forward_torch_parallel(args, kwargs)
        return self._forward_generic(args, kwargs)

    def _min_rows(self) -> int:
        """2 while a batch-statistics layer trains (a 1-row chunk breaks it), else 1."""
        for module in self.template.modules():
            if isinstance(module, _BatchNorm) and (
                module.training or module.running_mean is None or module.running_var is None
            ):
                return 2
        return 1

    def _merge(self, outputs: list[Any], sizes: list[int], gather: Any) -> Any:
        return merge_outputs(outputs, sizes, self.output_device, gather=gather, merge=self.merge)

    def _forward_generic(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        template = self.template
        parts, sizes = split_inputs(args, kwargs, self.devices, min_rows=self._min_rows())
        params = dict(template.named_parameters())
        buffers = dict(template.named_buffers())
        outputs = []
        for i, ((a, k), device) in enumerate(zip(parts, self.devices, strict=False)):
            overrides: dict[str, torch.Tensor] = {}
            for name, p in params.items():
                if p.device != device:
                    overrides[name] = p.to(device)  # differentiable: grads reach p
            moved: dict[str, torch.Tensor] = {}
            for name, b in buffers.items():
                if b.device != device:
                    moved[name] = b.to(device, copy=True)
                elif i > 0:
                    # Later replicas update a copy (dropped), as in nn.DataParallel;
                    # this also keeps the template's statistics from being updated twice.
                    moved[name] = b.clone()
            overrides.update(moved)
            # Nothing to substitute: the template itself is this replica (no overhead).
            out = functional_call(template, overrides, a, k) if overrides else template(*a, **k)
            if i == 0 and moved:
                # The first replica's buffer updates are kept, wherever it ran.
                with torch.no_grad():
                    for name, value in moved.items():
                        buffers[name].copy_(value)
            outputs.append(out)
        return self._merge(outputs, sizes, generic_gather)

    def _forward_torch_parallel(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from torch.nn.parallel import parallel_apply, replicate

        template = self.template
        first = self.devices[0]
        for t in _tensors_of(template):
            if t.device != first:
                raise RuntimeError(
                    f"the template must keep its parameters and buffers on {first} (the "
                    f"first replica's device) but one is on {t.device}; was the model moved "
                    "after multi_gpu_model? Move it back with model.to(...)."
                )
        parts, sizes = split_inputs(
            args, kwargs, self.devices, scatter=_cuda_scatter, min_rows=self._min_rows()
        )
        used = self.devices[: len(parts)]
        if len(parts) == 1:
            a, k = parts[0]
            outputs = [template(*a, **k)]
        else:
            replicas = replicate(template, used, not torch.is_grad_enabled())
            _unshare_buffers(template, replicas, used)
            outputs = parallel_apply(replicas, [p[0] for p in parts], [p[1] for p in parts], used)
        return self._merge(outputs, sizes, _cuda_gather)


def _unshare_buffers(
    template: nn.Module, replicas: Sequence[nn.Module], devices: Sequence[torch.device]
) -> None:
    """Give the later replicas on the template's own device buffers of their own.

    ``replicate`` returns the template's buffers as they are to the replica on
    ``devices[0]``, and to a later replica on that same device whenever a buffer was
    broadcast alone (a dtype group of one, e.g. a single BatchNorm's
    ``num_batches_tracked``): that replica's in-place updates would then land on the
    template too, counting the step twice. Cloning keeps "first replica's updates only".
    """
    for replica, device in zip(replicas[1:], devices[1:], strict=True):
        if device != devices[0]:
            continue  # another device: replicate made real copies
        for original, copy in zip(template.modules(), replica.modules(), strict=False):
            for name, buffer in original._buffers.items():
                mine = copy._buffers.get(name)
                if (
                    buffer is not None
                    and mine is not None
                    and mine.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
                ):
                    copy._buffers[name] = mine.clone()


def _tensors_of(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def multi_gpu_model(
    model: nn.Module,
    gpus: int | Sequence[int] | None = None,
    cpu_merge: bool = True,
    cpu_relocation: bool = False,
    *,
    devices: Sequence[DeviceLike] | None = None,
    merge: MergeFn | None = None,
) -> ParallelModel:
    """Replicate ``model`` on several devices: Keras's single-machine data parallelism.

    Each call splits the batch (dim 0 of every input tensor) into balanced chunks, runs one
    replica per chunk, and merges the outputs into what the plain model would return. The
    returned module shares its weights with ``model``: train it, then save ``model`` (or
    either one's ``state_dict()``: the keys are the template's).

    The merge rule, part by part of the output: a tensor whose dim 0 is each replica's
    chunk size is concatenated; ``None`` stays ``None``; tuples, namedtuples, lists, dicts
    and dataclasses keep their structure; a list with one entry per row (its length is the
    chunk size on every replica, its entries of one type, and not a structure of batch
    tensors) is concatenated as a list, e.g. a detection model's list of per-image dicts.
    Anything else (a Python number, a string, a 0-dim tensor, a tensor without a batch
    dimension) raises `MergeError` naming the part's path, unless ``merge`` handles it.

    While a batch-statistics layer (BatchNorm) trains, no replica gets a one-row chunk:
    fewer replicas are used for that call (5 rows on 3 replicas: chunks of 3 and 2).

    Args:
        model: The template ``nn.Module``.
        gpus: Keras's meaning: ``None`` uses every visible GPU; an int >= 2 uses GPUs
            ``0 .. gpus-1``; a list uses those GPU ids.
        cpu_merge: Concatenate the outputs on the CPU (True, Keras's default) or on the
            first replica's device.
        cpu_relocation: Keep the template's weights on the CPU (the model is moved there)
            and build each call's replicas from them; gradients flow back to the CPU
            weights. When False with GPUs, the template is moved to the first GPU and
            ``torch.nn.parallel.replicate`` makes the replicas.
        devices: Torch-native alternative to ``gpus`` (keyword-only): any list of at least
            two devices, repeats allowed, e.g. ``["cpu", "cpu"]`` or
            ``["cuda:0", "cuda:0"]``.
        merge: Keyword-only: ``merge(path, values, sizes)`` returns the merged value of an
            output part the rule cannot merge; ``path`` names the part (``"output[1]"``),
            ``values`` holds each replica's value and ``sizes`` their chunk sizes. E.g.
            ``lambda path, values, sizes: sum(values)`` for a per-chunk count.

    Returns:
        A ``ParallelModel``, used like ``model``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``merge`` is not callable, or an
            argument has the wrong type.
        ValueError: ``gpus`` is an int <= 1 or a list of length <= 1, ``gpus=None`` finds
            fewer than two GPUs, a requested GPU does not exist, or both ``gpus`` and
            ``devices`` are given.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> try:
        ...     parallel = multi_gpu_model(model, gpus=2)
        ... except ValueError:
        ...     parallel = multi_gpu_model(model, devices=["cpu", "cpu"])
        >>> parallel(torch.randn(7, 4)).shape
        torch.Size([7, 2])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"multi_gpu_model(model=...) expects a torch.nn.Module, got {type(model).__name__}"
        )
    if isinstance(model, ParallelModel):
        raise TypeError("model is already a multi_gpu_model; pass its .template instead")
    for name, value in (("cpu_merge", cpu_merge), ("cpu_relocation", cpu_relocation)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}")
    if merge is not None and not callable(merge):
        raise TypeError(
            f"merge must be None or a function merge(path, values, sizes), got {merge!r}"
        )
    replica_devices = resolve_devices(gpus, devices)
    if cpu_relocation:
        model.to(_CPU)
    elif all(d.type == "cuda" for d in replica_devices):
        model.to(replica_devices[0])
    return ParallelModel(
        model, replica_devices, cpu_merge=cpu_merge, cpu_relocation=cpu_relocation, merge=merge
    )
