"""Write DOT text to a file in the format its extension names, with Graphviz's ``dot``.

Writes are atomic: the output appears complete under its name or not at all.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

__all__ = ["FORMATS", "GraphvizNotFoundError", "file_format", "render"]

# Extension -> Graphviz output format. "dot"/"gv" are the DOT text itself.
FORMATS = {
    "png": "png",
    "svg": "svg",
    "pdf": "pdf",
    "jpg": "jpg",
    "jpeg": "jpeg",
    "gif": "gif",
    "ps": "ps",
    "eps": "eps",
    "dot": "dot",
    "gv": "dot",
}

INSTALL_HINT = (
    "Install Graphviz: `apt-get install graphviz` (Debian/Ubuntu), `dnf install graphviz` "
    "(Fedora), `brew install graphviz` (macOS), `conda install -c conda-forge graphviz`, or "
    "the installer from https://graphviz.org/download/ (Windows: add its bin folder to PATH). "
    "A .dot file needs no Graphviz: pass to_file='model.dot'."
)


class GraphvizNotFoundError(FileNotFoundError):
    """Graphviz's ``dot`` program is not installed, not on PATH, or cannot be run."""


def file_format(to_file: str | os.PathLike[str]) -> str:
    """The output format named by ``to_file``'s extension (``png`` when it has none).

    Raises:
        ValueError: an extension that is not a known format.
    """
    suffix = Path(to_file).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    if suffix not in FORMATS:
        raise ValueError(
            f"to_file={str(to_file)!r}: unknown format {suffix!r}; use one of the extensions "
            f"{sorted(FORMATS)}"
        )
    return FORMATS[suffix]


def _atomic_write(path: Path, data: bytes) -> None:
    # os.open with mode 0o666 lets the umask decide the permissions, as a plain open()
    # would (mkstemp would make the file private to its owner).
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(source: str, to_file: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``source`` to ``to_file`` as ``fmt`` and return the path.

    Raises:
        FileNotFoundError: the folder of ``to_file`` does not exist.
        GraphvizNotFoundError: ``fmt`` needs Graphviz and ``dot`` is not on PATH, or the
            one found there cannot be run.
        RuntimeError: ``dot`` failed (its message is included).
    """
    path = Path(os.fspath(to_file))
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"to_file={str(to_file)!r}: the folder {str(path.parent)!r} does not exist"
        )
    if fmt == "dot":
        _atomic_write(path, source.encode("utf-8"))
        return path
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFoundError(
            f"writing {str(to_file)!r} as {fmt} needs Graphviz's `dot` program, which was not "
            f"found on PATH. {INSTALL_HINT}"
        )
    try:
        proc = subprocess.run(
            [exe, f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True, check=False
        )
    except OSError as exc:  # found but not runnable: wrong binary, no permission, bad link
        raise GraphvizNotFoundError(
            f"writing {str(to_file)!r} as {fmt} needs Graphviz's `dot` program; the one found "
            f"on PATH at {exe!r} cannot be run ({exc.strerror or exc}). {INSTALL_HINT}"
        ) from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"Graphviz `dot -T{fmt}` failed ({proc.returncode}): {message}")
    _atomic_write(path, proc.stdout)
    return path
