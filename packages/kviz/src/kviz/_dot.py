"""DOT text for a layer graph: Keras's record nodes (``name: Class``, and with shapes
``input:``/``output:``), clusters for expanded containers, edges where tensors flow."""

from __future__ import annotations

from typing import Any

from torch import nn

from ._layout import Layout
from ._summary import format_shape
from ._trace import INPUT, MODULE, OP, OUTPUT, Node, dtype_name, is_script

__all__ = ["activation_name", "layout_to_dot", "quote"]

_FILL = {INPUT: "#e3f1df", MODULE: "#e6eef9", OP: "#fdf3d6", OUTPUT: "#e3f1df"}
_BORDER = {INPUT: "#5b8c51", MODULE: "#4a6fa5", OP: "#b08a1e", OUTPUT: "#5b8c51"}


def quote(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _record(text: str) -> str:
    # Characters with a meaning inside record labels.
    out = text.replace("\\", "\\\\")
    for ch in '{}|<>"':
        out = out.replace(ch, "\\" + ch)
    return out


def activation_name(module: nn.Module | None) -> str | None:
    """A layer's activation, as Keras's ``show_layer_activations`` shows it: an activation
    module's own name (``relu`` for ``nn.ReLU``), a layer's ``activation`` attribute
    (a name, a function or a module) or its ``nonlinearity`` (``nn.RNN``); else None."""
    if module is None or is_script(module):
        return None
    if type(module).__module__ == "torch.nn.modules.activation":
        return type(module).__name__.lower()
    for attr in ("activation", "nonlinearity"):
        value: Any = getattr(module, attr, None)
        if isinstance(value, str):
            return value
        if isinstance(value, nn.Module):
            return type(value).__name__.lower()
        if callable(value):
            return str(getattr(value, "__name__", type(value).__name__))
    return None


def _trainable_text(module: nn.Module | None) -> str | None:
    if module is None:
        return None
    flags = [p.requires_grad for p in module.parameters()]
    if not flags:
        return "-"
    return "Y" if all(flags) else "N" if not any(flags) else "partial"


def _dtype_text(node: Node) -> str:
    if node.dtype is not None:
        return node.dtype
    if node.module is not None:
        for p in node.module.parameters():
            return dtype_name(p)
    return "?"


def _title(node: Node, calls: int, show_layer_names: bool) -> str:
    if node.kind == OP:
        return f"{node.name}: {node.type_name}" if show_layer_names else node.type_name
    name = node.name or node.type_name.lower()
    suffix = f" (call {node.call_index + 1}/{calls})" if calls > 1 else ""
    if node.shared:
        suffix += " (shared)"
    if show_layer_names:
        return f"{name}{suffix}: {node.type_name}"
    return f"{node.type_name}{suffix}"


def _node_line(node: Node, calls: int, show_layer_names: bool, options: dict[str, bool]) -> str:
    fields = [_record(_title(node, calls, show_layer_names))]
    if options["dtype"]:
        fields.append(_record(_dtype_text(node)))
    if options["activations"] and node.kind == MODULE:
        activation = activation_name(node.module)
        if activation is not None:
            fields.append(_record(f"activation: {activation}"))
    if options["trainable"] and node.kind == MODULE:
        fields.append(_record(f"trainable: {_trainable_text(node.module)}"))
    if options["shapes"]:
        ins = node.in_shapes
        in_text = ", ".join(format_shape(s) for s in ins) if ins else "?"
        out_text = format_shape(node.out_shapes)
        fields.append(f"{{input:|output:}}|{{{{{_record(in_text)}}}|{{{_record(out_text)}}}}}")
    label = "|".join(fields)
    return (
        f"n{node.idx} [label={quote(label)}, fillcolor={quote(_FILL[node.kind])}, "
        f"color={quote(_BORDER[node.kind])}];"
    )


def layout_to_dot(
    lay: Layout,
    *,
    title: str,
    show_shapes: bool,
    show_layer_names: bool,
    rankdir: str,
    dpi: float,
    show_dtype: bool = False,
    show_activations: bool = False,
    show_trainable: bool = False,
) -> str:
    """The DOT source of ``lay``."""
    nodes = lay.trace.nodes
    calls = lay.calls
    options = {
        "shapes": show_shapes,
        "dtype": show_dtype,
        "activations": show_activations,
        "trainable": show_trainable,
    }
    lines = [
        f"digraph {quote(title)} {{",
        f"  graph [rankdir={rankdir}, dpi={dpi:g}, nodesep=0.3, ranksep=0.35, "
        'fontname="Helvetica"];',
        '  node [shape=record, style="rounded,filled", fontname="Helvetica", fontsize=11, '
        'margin="0.12,0.04", height=0.3];',
        '  edge [color="#555555", arrowsize=0.7];',
    ]
    top = [i for i, owner in lay.owner.items() if owner < 0]
    # Clusters nest at most as deep as the module tree; recursion depth follows it.
    stack: list[tuple[int, str, bool]] = [(i, "  ", False) for i in sorted(top, reverse=True)]
    while stack:
        idx, indent, closing = stack.pop()
        if closing:
            lines.append(f"{indent}}}")
            continue
        node = nodes[idx]
        if idx in lay.clusters:
            label = _title(node, calls.get(id(node.module), 1), True)
            lines.append(f"{indent}subgraph cluster_{idx} {{")
            lines.append(
                f'{indent}  label={quote(label)}; style="rounded,dashed"; color="#8a8a8a"; '
                f'fontname="Helvetica"; fontsize=10; labeljust=l;'
            )
            stack.append((idx, indent, True))
            inner = lay.clusters[idx]
            stack.extend((i, indent + "  ", False) for i in sorted(inner, reverse=True))
        else:
            module_calls = calls.get(id(node.module), 1) if node.kind == MODULE else 1
            lines.append(indent + _node_line(node, module_calls, show_layer_names, options))
    for e in lay.edges:
        lines.append(f"  n{e.src} -> n{e.dst};")
    # A module called more than once: its calls are separate nodes, tied by a dashed line.
    previous: dict[int, int] = {}
    for node in lay.shown:
        if node.kind != MODULE or calls.get(id(node.module), 1) < 2:
            continue
        key = id(node.module)
        if key in previous:
            lines.append(
                f'  n{previous[key]} -> n{node.idx} [style=dashed, color="#9a9a9a", '
                f'arrowhead=none, constraint=false, tooltip="same module, weights shared"];'
            )
        previous[key] = node.idx
    lines.append("}")
    return "\n".join(lines) + "\n"
