"""``python -m kviz summary|plot MODULE:FACTORY ...``: the summary or the diagram of a model
that lives in a user's package, from the command line."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._forward import ForwardError
from ._plot import plot_model
from ._render import GraphvizNotFoundError
from ._summary import print_summary

__all__ = ["load_model", "main", "main_exit"]


class CliError(Exception):
    """A problem with the command line or the model it names; ``status`` is the exit status
    (2: a usage error, 1: the user's own code failed while loading the model)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _failed(what: str, exc: BaseException) -> CliError:
    # The user's module or factory raised: report it in one line, not as kviz's traceback.
    return CliError(f"{what} raised {type(exc).__name__}: {exc}", status=1)


def load_model(spec: str) -> nn.Module:
    """The model named by ``MODULE:FACTORY``: FACTORY is an ``nn.Module`` object, or a class
    or function called with no arguments that returns one (dotted names allowed).

    Raises:
        CliError: a malformed spec, a module or name that cannot be found, a factory that
            needs arguments or does not return an nn.Module (status 2); an exception raised
            by the module on import or by the factory (status 1).
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise CliError(f"model must be MODULE:FACTORY (e.g. mypkg.models:make_net); got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: models in the current folder
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing != module_name and not module_name.startswith(missing + "."):
            # The module exists but imports something missing.
            raise _failed(f"importing {module_name!r}", exc) from exc
        raise CliError(f"cannot import module {module_name!r} (from {spec!r}): {exc}") from exc
    except Exception as exc:
        raise _failed(f"importing {module_name!r}", exc) from exc
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            owner = ".".join([module_name, *attr.split(".")[:i]])
            raise CliError(f"{owner!r} has no attribute {part!r} (from {spec!r})") from exc
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise CliError(f"{spec!r} is neither an nn.Module nor callable")
        try:
            inspect.signature(obj).bind()
        except TypeError as exc:
            raise CliError(
                f"{spec!r} cannot be called with no arguments ({exc}); name an nn.Module or "
                f"a factory that takes none"
            ) from exc
        except ValueError:
            pass  # no signature to read (some builtins): just call it
        try:
            obj = obj()
        except Exception as exc:
            raise _failed(f"calling {spec!r}", exc) from exc
    if not isinstance(obj, nn.Module):
        raise CliError(f"{spec!r} returned {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _shape(text: str) -> tuple[int, ...]:
    if text.strip() in ("()", "scalar"):
        return ()  # a 0-d input
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a shape like 1,3,32,32 (or 'scalar' for a 0-d input): {text!r}"
        ) from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"not a shape of positive sizes (or 'scalar' for a 0-d input): {text!r}"
        )
    return dims


def _dtypes(text: str) -> list[torch.dtype]:
    out = []
    for name in text.split(","):
        dtype = getattr(torch, name.strip().removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            raise argparse.ArgumentTypeError(f"not a torch dtype: {name!r}")
        out.append(dtype)
    return out


def _positions(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kviz",
        description="Keras-style model summary and diagram for a torch nn.Module.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="MODULE:FACTORY, e.g. mypkg.models:make_net")
        p.add_argument(
            "--input-size",
            type=_shape,
            action="append",
            metavar="SHAPE",
            help="example input shape, batch included, e.g. 1,3,32,32, or 'scalar' for a 0-d "
            "input (repeat per input)",
        )
        p.add_argument("--dtypes", type=_dtypes, help="dtypes of the inputs, e.g. float32,int64")
        p.add_argument("--device", help="device for the example input (e.g. cpu, cuda:0)")
        p.add_argument("--expand-nested", action="store_true", help="show nested modules")
        p.add_argument("--depth", type=int, help="deepest nesting level shown")
        p.add_argument(
            "--layer-range",
            nargs=2,
            metavar=("START", "END"),
            help="show only the top-level layers from START to END (names or patterns)",
        )
        p.add_argument("--show-trainable", action="store_true", help="show trainability")

    s = sub.add_parser("summary", help="print the summary table")
    common(s)
    s.add_argument("--line-length", type=int, help="table width")
    s.add_argument("--positions", type=_positions, help="column ends, e.g. .4,.7,.8,1")
    s.add_argument(
        "--extra-columns",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        default=[],
        help="more columns: mult_adds, param_bytes (comma-separated)",
    )

    p = sub.add_parser("plot", help="write the diagram to a file")
    common(p)
    p.add_argument("-o", "--to-file", default="model.png", help="output file (default model.png)")
    p.add_argument("--show-shapes", action="store_true", help="show input/output shapes")
    p.add_argument("--show-dtype", action="store_true", help="show output dtypes")
    p.add_argument("--show-layer-activations", action="store_true", help="show layers' activations")
    p.add_argument("--show-functional", action="store_true", help="draw functional calls as nodes")
    p.add_argument("--hide-layer-names", action="store_true", help="show class names only")
    p.add_argument("--rankdir", default="TB", choices=["TB", "LR", "BT", "RL"])
    p.add_argument("--dpi", type=float, default=96)
    p.add_argument("--graph", default="layers", choices=["layers", "autograd"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
    except CliError as exc:
        if exc.status == 2:
            parser.error(str(exc))
        print(f"kviz: error: {exc}", file=sys.stderr)
        return exc.status
    sizes = args.input_size
    # One shape is passed as a shape; several, or a 0-d one, as a list of shapes.
    input_size: Any = sizes
    if sizes and len(sizes) == 1 and sizes[0]:
        input_size = sizes[0]
    try:
        if args.command == "summary":
            print_summary(
                model,
                line_length=args.line_length,
                positions=args.positions,
                input_size=input_size,
                dtypes=args.dtypes,
                device=args.device,
                expand_nested=args.expand_nested,
                depth=args.depth,
                show_trainable=args.show_trainable,
                layer_range=args.layer_range,
                extra_columns=args.extra_columns,
            )
        else:
            plot_model(
                model,
                to_file=args.to_file,
                show_shapes=args.show_shapes,
                show_layer_names=not args.hide_layer_names,
                rankdir=args.rankdir,
                expand_nested=args.expand_nested,
                dpi=args.dpi,
                input_size=input_size,
                dtypes=args.dtypes,
                device=args.device,
                depth=args.depth,
                graph=args.graph,
                show_dtype=args.show_dtype,
                show_layer_activations=args.show_layer_activations,
                show_trainable=args.show_trainable,
                layer_range=args.layer_range,
                show_functional=args.show_functional,
            )
            print(f"wrote {args.to_file}")
    except (ForwardError, GraphvizNotFoundError) as exc:
        return _fail(exc, 1)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        # kviz's own argument checks: a usage error.
        return _fail(exc, 2)
    except Exception as exc:
        # Anything else (a TorchScript model failing, Graphviz failing): one line, no
        # traceback.
        return _fail(exc, 1, with_type=True)
    return 0


def _fail(exc: BaseException, status: int, *, with_type: bool = False) -> int:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if with_type:
        text = f"{type(exc).__name__}: {text}"
    print(f"kviz: error: {text}", file=sys.stderr)
    return status


def main_exit() -> None:
    """Console-script entry point (``kviz summary ...``)."""
    sys.exit(main())
