"""Record the layer-level graph of one forward pass: one node per module call, one per
functional op that merges tensors from different producers, edges where tensors flow.

How it works (the way torchview does it, but lean): a global forward pre-hook and a global
forward hook see every module call; a map from tensor identity to the node (and output
position) that produced it turns the tensors a call receives into edges. Functional ops
between modules (``x + residual``, ``torch.cat``) are seen by a ``TorchFunctionMode`` that
is switched on only while the body of a module that computes with tensors itself runs (not
inside leaf layers, not inside ``nn.Sequential``, not inside other tools' hooks), so the cost
per module call stays a few microseconds.

The map always names the *innermost* producer of a tensor; a container's outputs keep the
names of the layers inside it. That lets one recording be drawn at any depth: collapsing a
container maps everything inside it onto the container (see ``_layout.py``).

Modules the model calls without having registered them (kept in a plain Python list or
dict) are found when they are called and named after the attribute that holds them;
TorchScript modules are single layers (their insides run in TorchScript, out of sight).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.modules.module as _torch_module
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from ._nest import flat_tensors, named_tensors, shape_of

__all__ = [
    "INPUT",
    "MODULE",
    "OP",
    "OUTPUT",
    "Node",
    "Trace",
    "Tracer",
    "dtype_name",
    "is_plain_sequential",
    "is_script",
]

INPUT = "input"
MODULE = "module"
OP = "op"
OUTPUT = "output"

Source = tuple[int, int]  # (node index, output position)
Shape = Any  # tuple[int, ...] for a tensor, list[Shape] for a structure of tensors


def is_script(module: object) -> bool:
    """True for a TorchScript module (scripted or traced)."""
    return isinstance(module, torch.jit.ScriptModule)


class Node:
    """One node of the recorded graph: a model input or output, a module call or an op."""

    __slots__ = (
        "atomic",
        "call_index",
        "depth",
        "dtype",
        "has_child",
        "idx",
        "in_shapes",
        "inputs",
        "kind",
        "module",
        "name",
        "ops_body",
        "out_map",
        "out_shapes",
        "parent",
        "passthrough",
        "shared",
        "type_name",
    )

    def __init__(
        self,
        idx: int,
        kind: str,
        name: str,
        type_name: str,
        parent: int,
        depth: int,
        module: nn.Module | None = None,
    ) -> None:
        self.idx = idx
        self.kind = kind
        self.name = name
        self.type_name = type_name
        self.parent = parent
        self.depth = depth
        self.module = module
        self.call_index = 0
        self.inputs: list[Source] = []
        self.in_shapes: list[Shape] | None = None
        self.out_shapes: Shape = None
        self.dtype: str | None = None  # of the first output tensor (plots record it)
        self.atomic = kind != MODULE
        self.ops_body = False
        self.has_child = False
        self.shared = False  # the module is registered under more than one name
        # For containers: innermost producer of each returned tensor -> output position.
        self.out_map: dict[Source, int] | None = None
        # For containers returning a tensor they did not produce: position -> real source.
        self.passthrough: dict[int, Source] | None = None

    def __repr__(self) -> str:
        return f"Node({self.idx}, {self.kind}, {self.name!r}, {self.type_name})"


class Trace:
    """The recorded graph: nodes in execution order (a topological order)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.nodes: list[Node] = []
        self.traced = False  # False: built from the module tree, no forward pass
        # Modules called by the model but not registered in it (plain lists, dicts), with
        # the names they were given.
        self.unregistered: dict[str, nn.Module] = {}


_UNKNOWN = object()
_STACK_LEN = getattr(torch._C, "_len_torch_function_stack", None)
_STACK_AT = getattr(torch._C, "_get_function_stack_at", None)


def _top_mode() -> object:
    """The innermost active TorchFunctionMode (``_UNKNOWN`` if torch cannot say)."""
    if _STACK_LEN is None or _STACK_AT is None:
        return _UNKNOWN
    n = _STACK_LEN()
    return _STACK_AT(n - 1) if n else None


def is_plain_sequential(module: nn.Module) -> bool:
    """True for a module whose forward is ``nn.Sequential``'s own (children run in order)."""
    return type(module).forward is nn.Sequential.forward


class _ModInfo:
    __slots__ = ("atomic", "dynamic", "name", "names", "ops_body")

    def __init__(
        self, name: str, atomic: bool, ops_body: bool, names: list[str], dynamic: bool
    ) -> None:
        self.name = name
        self.names = names  # every name it is registered under (shared by several parents)
        self.atomic = atomic
        self.ops_body = ops_body
        self.dynamic = dynamic  # found during the forward pass, not registered in the model


def _info(module: nn.Module, names: list[str], dynamic: bool) -> _ModInfo:
    if is_script(module):
        return _ModInfo(names[0], True, False, names, dynamic)
    atomic = not any(child is not None for child in module._modules.values())
    ops_body = not atomic and not is_plain_sequential(module)
    return _ModInfo(names[0], atomic, ops_body, names, dynamic)


class _OpMode(TorchFunctionMode):
    """Sees functional ops in module bodies; records those that merge producers."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        out = func(*args, **kwargs)
        # Cheapest test first: ops that return no tensor (x.shape, x.size(), x.dim()) never
        # carry data flow.
        if isinstance(out, torch.Tensor):
            outs = [out]
        elif isinstance(out, (list, tuple)):
            outs = flat_tensors(out, [])
            if not outs:
                return out
        else:
            return out
        self.tracer._record_op(func, args, kwargs, outs, out)
        return out


class Tracer:
    """Records a ``Trace`` of the forward passes run while it is active (see ``tracing``).

    Args:
        model: the model whose module calls become nodes; other modules are transparent
            unless the model calls them from its own code (unregistered modules).
        details: record each node's input shapes and output dtype (plots show them).
        functional: record every functional op that takes a tensor from a recorded node
            (``F.relu``, ``torch.flatten``, ``x.view``) as a node of its own, not only the
            ops that merge tensors of several producers.
    """

    def __init__(self, model: nn.Module, *, details: bool = True, functional: bool = False) -> None:
        self.details = details
        self.functional = functional
        self.trace = Trace(model)
        self.nodes = self.trace.nodes
        self._tmap: dict[int, tuple[weakref.ref[torch.Tensor], int, int]] = {}
        self._mods: dict[int, _ModInfo] = {}
        self._calls: dict[int, int] = {}
        self._op_names: dict[tuple[int, str], int] = {}
        self._stack: list[int] = []
        self._on = False
        self._mode = _OpMode(self)
        self._tid = threading.get_ident()
        self._handles: list[RemovableHandle] = []
        self._armed = False
        self._tracing = False
        any_ops_body = False
        self.modules: list[nn.Module] = []  # every module of the model, once
        names: dict[int, list[str]] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            key = id(module)
            if key in names:
                names[key].append(name)
                continue
            names[key] = [name]
            self.modules.append(module)
        for module in self.modules:
            info = _info(module, names[id(module)], dynamic=False)
            any_ops_body = any_ops_body or info.ops_body
            self._mods[id(module)] = info
        self._any_ops_body = any_ops_body

    # -- switching the op mode -------------------------------------------------------------

    def _mode_on(self) -> None:
        if not self._on:
            self._mode.__enter__()  # type: ignore[no-untyped-call]
            self._on = True

    def _mode_off(self) -> None:
        if self._on:
            if _top_mode() not in (self._mode, _UNKNOWN):
                # A mode of the model's own is above ours: popping would remove *it*.
                # Leave ours on; it then records a little more, which layout absorbs.
                return
            self._mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]
            self._on = False

    # -- sources -----------------------------------------------------------------------------

    def _sources(self, tensors: list[torch.Tensor], into: list[Source]) -> list[Source]:
        tmap = self._tmap
        for t in tensors:
            entry = tmap.get(id(t))
            if entry is not None and entry[0]() is t:
                src = (entry[1], entry[2])
                if src not in into:
                    into.append(src)
        return into

    def _bind(self, tensors: list[torch.Tensor], node: int) -> None:
        tmap = self._tmap
        for pos, t in enumerate(tensors):
            tmap[id(t)] = (weakref.ref(t), node, pos)

    def add_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Create one input node per tensor of the model's example input."""
        import inspect

        try:
            bound = inspect.signature(self.trace.model.forward).bind(*args, **kwargs)
            labelled: list[tuple[str, Any]] = list(bound.arguments.items())
        except (TypeError, ValueError):
            labelled = [(f"input_{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
        for label, value in labelled:
            for name, tensor in named_tensors(value, label, []):
                idx = len(self.nodes)
                node = Node(idx, INPUT, name, "Input", -1, 0)
                node.out_shapes = tensor.shape
                node.in_shapes = [tensor.shape]
                node.dtype = dtype_name(tensor)
                self.nodes.append(node)
                self._tmap[id(tensor)] = (weakref.ref(tensor), idx, 0)

    def add_outputs(self, output: Any) -> None:
        """Create one output node per tensor the model returned, fed by its producer."""
        for name, tensor in named_tensors(output, "output", []):
            idx = len(self.nodes)
            node = Node(idx, OUTPUT, name, "Output", -1, 0)
            node.out_shapes = tensor.shape
            node.in_shapes = [tensor.shape]
            node.dtype = dtype_name(tensor)
            self._sources([tensor], node.inputs)
            self.nodes.append(node)

    # -- modules the model calls without registering them ------------------------------------

    def _discover(self, module: nn.Module) -> _ModInfo:
        """Name an unregistered module after the attribute of a calling module that holds
        it (``blocks.0`` for ``self.blocks = [nn.Linear(...), ...]``) and learn its tree."""
        base = ""
        for idx in reversed(self._stack):
            owner = self.nodes[idx].module
            found = _holder_path(owner, module) if owner is not None else None
            if found is not None:
                prefix = self.nodes[idx].name
                base = f"{prefix}.{found}" if prefix else found
                break
        if not base:
            base = f"{type(module).__name__.lower()}_{len(self.trace.unregistered)}"
        while base in self.trace.unregistered:
            base += "_"
        self.trace.unregistered[base] = module
        result: _ModInfo | None = None
        for sub_name, sub in module.named_modules():
            if id(sub) in self._mods:
                continue
            full = f"{base}.{sub_name}" if sub_name else base
            info = _info(sub, [full], dynamic=True)
            self._mods[id(sub)] = info
            self.modules.append(sub)
            if sub is module:
                result = info
        return result if result is not None else self._mods[id(module)]

    # -- hooks -------------------------------------------------------------------------------

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        # Hot path: runs for every module call; kept lean on purpose.
        info = self._mods.get(id(module))
        if info is None:
            if not self._stack or threading.get_ident() != self._tid:
                return
            info = self._discover(module)
        elif threading.get_ident() != self._tid:
            return
        if self._on:
            self._mode_off()
        nodes = self.nodes
        stack = self._stack
        idx = len(nodes)
        if stack:
            parent = stack[-1]
            pnode = nodes[parent]
            pnode.has_child = True
            node = Node(idx, MODULE, info.name, "", parent, pnode.depth + 1, module)
        else:
            pnode = None
            node = Node(idx, MODULE, info.name, "", -1, 0, module)
        if len(info.names) > 1:
            node.shared = True
            node.name = _name_under(info.names, pnode.name if pnode is not None else "")
        key = id(module)
        count = self._calls.get(key, 0)
        node.call_index = count
        self._calls[key] = count + 1
        node.atomic = info.atomic
        node.ops_body = info.ops_body
        if len(args) == 1 and isinstance(args[0], torch.Tensor):
            t = args[0]
            entry = self._tmap.get(id(t))
            if entry is not None and entry[0]() is t:
                node.inputs.append((entry[1], entry[2]))
            if self.details:
                node.in_shapes = [t.shape]
        elif args:
            tensors = flat_tensors(args, [])
            if tensors:
                self._sources(tensors, node.inputs)
                if self.details:
                    node.in_shapes = [t.shape for t in tensors]
        nodes.append(node)
        stack.append(idx)
        if info.dynamic and info.ops_body:
            self._mode_on()  # no late hook of its own (it was not known when armed)

    def _post(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        # Hot path, like _pre.
        info = self._mods.get(id(module))
        if info is None or threading.get_ident() != self._tid:
            return
        if self._on:
            self._mode_off()
        if not self._stack:
            return
        idx = self._stack.pop()
        node = self.nodes[idx]
        if kwargs:
            # Keyword tensors are only visible here (global pre-hooks get no kwargs).
            tensors = flat_tensors(kwargs, [])
            if tensors:
                self._sources(tensors, node.inputs)
                if self.details:
                    node.in_shapes = (node.in_shapes or []) + [t.shape for t in tensors]
        node.type_name = type(module).__name__  # a lazy module changes class when built
        if not node.atomic and not node.has_child:
            # Computed everything itself (e.g. nn.MultiheadAttention): a layer, not a
            # container; the ops recorded inside it are absorbed into it.
            node.atomic = True
        if isinstance(output, torch.Tensor):
            node.out_shapes = output.shape
            outs = [output]
        else:
            node.out_shapes = shape_of(output)
            if node.out_shapes is None and output is not None:
                node.out_shapes = type(output).__name__  # a distribution, a string...
            outs = flat_tensors(output, [])
        if self.details and outs:
            node.dtype = dtype_name(outs[0])
        if info.dynamic and self._stack and self.nodes[self._stack[-1]].ops_body:
            self._mode_on()  # what _late_post does for registered modules
        tmap = self._tmap
        if node.atomic:
            for pos, t in enumerate(outs):
                tmap[id(t)] = (weakref.ref(t), idx, pos)
            return
        for pos, t in enumerate(outs):
            entry = tmap.get(id(t))
            if entry is not None and entry[0]() is t and entry[1] > idx:
                if node.out_map is None:
                    node.out_map = {}
                node.out_map.setdefault((entry[1], entry[2]), pos)
            else:
                if entry is not None and entry[0]() is t:
                    if node.passthrough is None:
                        node.passthrough = {}
                    node.passthrough[pos] = (entry[1], entry[2])
                tmap[id(t)] = (weakref.ref(t), idx, pos)

    def _late_pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        # Runs after every other pre-hook (other tools' too): the body starts now.
        if threading.get_ident() == self._tid and self._tracing:
            self._mode_on()

    def _late_post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        # Runs after every other forward hook: back in the caller's body.
        if threading.get_ident() != self._tid or not self._tracing:
            return
        if self._stack and self.nodes[self._stack[-1]].ops_body:
            self._mode_on()

    def _record_op(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        outs: list[torch.Tensor],
        out: Any,
    ) -> None:
        ins = flat_tensors(args, [])
        if kwargs:
            flat_tensors(kwargs, ins)
        if not ins:
            return
        sources = self._sources(ins, [])
        if not sources:
            return
        first = sources[0][0]
        if not self.functional and all(s[0] == first for s in sources):
            # One producer: a pass-through op (view, relu, getitem): the result counts
            # as that producer's tensor, so the graph stays at layer level.
            src = sources[0]
            tmap = self._tmap
            for t in outs:
                entry = tmap.get(id(t))
                if entry is None or entry[0]() is not t:
                    tmap[id(t)] = (weakref.ref(t), src[0], src[1])
            return
        nodes = self.nodes
        stack = self._stack
        parent = stack[-1] if stack else -1
        depth = nodes[parent].depth + 1 if parent >= 0 else 0
        base = _op_name(func)
        key = (parent, base)
        count = self._op_names.get(key, 0)
        self._op_names[key] = count + 1
        short = base if count == 0 else f"{base}_{count}"
        # Named by the block whose code ran it: "layer1.0.add", not a global counter.
        prefix = nodes[parent].name if parent >= 0 else ""
        name = f"{prefix}.{short}" if prefix else short
        idx = len(nodes)
        node = Node(idx, OP, name, _op_type_name(func, base), parent, depth)
        node.inputs = sources
        node.in_shapes = [t.shape for t in ins]
        node.out_shapes = shape_of(out)
        node.dtype = dtype_name(outs[0])
        nodes.append(node)
        self._bind(outs, idx)

    # -- activation ------------------------------------------------------------------------

    def arm(self) -> None:
        """Register the hooks that must run after every other tool's hooks."""
        if self._armed:
            return
        self._armed = True
        if not self._any_ops_body:
            return  # nothing but leaf layers and nn.Sequential: no op ever needs seeing
        model = self.trace.model
        for module in self.modules:
            if is_script(module):
                continue  # TorchScript modules take no Python hooks
            info = self._mods[id(module)]
            if info.ops_body:
                self._handles.append(module.register_forward_pre_hook(self._late_pre))
            if module is not model:
                self._handles.append(module.register_forward_hook(self._late_post))

    @contextmanager
    def tracing(self) -> Iterator[Tracer]:
        """Activate the hooks for the block; the recorded trace is ``self.trace``."""
        handles = [
            _torch_module.register_module_forward_pre_hook(self._pre),
            _torch_module.register_module_forward_hook(self._post, with_kwargs=True),
        ]
        self._tracing = True
        try:
            self.arm()
            yield self
        finally:
            self._tracing = False
            self._mode_off()
            for handle in handles + self._handles:
                handle.remove()
            self._handles.clear()
            self._tmap.clear()
            self._stack.clear()
            self.trace.traced = True


def _holder_path(owner: nn.Module, module: nn.Module) -> str | None:
    """``attr.i`` / ``attr.key`` when ``owner.attr`` is a list, tuple or dict holding
    ``module`` (the module itself would be registered, so only containers are searched)."""
    for attr, value in vars(owner).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if item is module:
                    return f"{attr}.{i}"
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if item is module:
                    return f"{attr}.{key}"
    return None


def _name_under(names: list[str], parent: str) -> str:
    """Of a shared module's names, the one under the calling module ``parent``."""
    for name in names:
        head, _, _ = name.rpartition(".")
        if head == parent:
            return name
    return names[0]


def dtype_name(tensor: torch.Tensor) -> str:
    """``float32`` for a float32 tensor: its dtype without the ``torch.`` prefix."""
    return str(tensor.dtype).removeprefix("torch.")


_ARITHMETIC = {
    "add", "sub", "mul", "matmul", "truediv", "floordiv", "div", "mod", "pow",
    "and", "or", "xor", "lshift", "rshift",
}  # fmt: skip


def _op_name(func: Callable[..., Any]) -> str:
    """``__add__``/``__radd__`` -> ``add``, ``__iadd__`` -> ``add_`` (torch's in-place
    spelling), ``cat`` -> ``cat``, ``x.T`` -> ``T``."""
    raw = getattr(func, "__name__", "op") or "op"
    if raw == "__get__":  # a property of Tensor (x.T, x.mT): its own name
        owner = getattr(func, "__self__", None)
        raw = getattr(owner, "__name__", "get") or "get"
    if raw.startswith("__") and raw.endswith("__"):
        core = raw[2:-2]
        if core[:1] in ("i", "r") and core[1:] in _ARITHMETIC:
            return core[1:] + ("_" if core[0] == "i" else "")
        return core or "op"
    return raw.lstrip("_") or "op"


def _op_type_name(func: Callable[..., Any], base: str) -> str:
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", "") or ""
    if module.startswith("torch.nn.functional"):
        return f"F.{base}"
    if qualname.split(".")[0] in ("Tensor", "TensorBase", "_TensorBase", "getset_descriptor"):
        return f"Tensor.{base}"
    return f"torch.{base}"
