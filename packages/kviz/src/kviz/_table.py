"""Keras's summary table: column positions from ``line_length``/``positions``, and rows whose
long fields wrap onto more lines instead of being cut.

Width rules, as in Keras 2: ``line_length`` (default 65, or 98 with ``Connected to``) is the
width of the rulers; ``positions`` are the column ends, fractions of ``line_length`` when
the last one is at most 1, else absolute positions (which may reach past ``line_length``:
rows are then wider than the rulers, as Keras prints them). Wrapping breaks between words
and between shapes, never inside one, unless a single word or shape is wider than its
column.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
from collections.abc import Sequence

__all__ = ["Columns", "as_int", "columns", "format_row", "wrap"]


class Columns:
    """Absolute end positions of each column and the width of the rulers."""

    def __init__(self, positions: list[int], line_length: int) -> None:
        self.positions = positions
        self.line_length = line_length
        starts = [0, *positions[:-1]]
        last = len(positions) - 1
        # A field may use its column but one character (the separating space); the last
        # one may use it all.
        self.widths = [
            p - s - (1 if i < last else 0)
            for i, (s, p) in enumerate(zip(starts, positions, strict=False))
        ]
        self.starts = starts


def as_int(value: object, name: str) -> int:
    """``value`` as an int (numpy integers too); a bool or a float is refused.

    Raises:
        TypeError: ``value`` is not an integer.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None


def columns(
    names: Sequence[str],
    line_length: int | None,
    positions: Sequence[float] | None,
    *,
    default_length: int,
    default_positions: Sequence[float],
    extras: Sequence[int] = (),
) -> Columns:
    """Resolve Keras's ``line_length`` and ``positions`` for the columns ``names``.

    ``extras`` are the widths of optional trailing columns (the extra columns, Keras's
    "Trainable"), which ``positions`` may leave out: they are then appended after the
    last position, and the default width grows by as much (a given ``line_length``
    includes them).

    Raises:
        TypeError: non-numeric ``line_length`` or ``positions``.
        ValueError: a wrong count, decreasing positions, or columns with no room left.
    """
    count = len(names)
    main = count - len(extras)
    if line_length is not None:
        line_length = as_int(line_length, "line_length")
        if line_length < count * 2:
            raise ValueError(
                f"line_length must leave room for {count} columns (at least {count * 2}), "
                f"got {line_length}"
            )
    if positions is None:
        pos = list(default_positions)
    else:
        # list() first: a generator would be used up by the type check below.
        pos = list(positions) if not isinstance(positions, (str, bytes)) else []
        if not pos or not all(isinstance(p, numbers.Real) and not isinstance(p, bool) for p in pos):
            raise TypeError(f"positions must be a list of numbers, got {positions!r}")
        pos = [float(p) for p in pos]
        if len(pos) not in (main, count):
            expected = f"{main} or {count}" if extras else f"{count}"
            raise ValueError(
                f"positions must give {expected} column ends for the columns "
                f"{list(names)}, got {len(pos)}: {pos!r}"
            )
        if not all(math.isfinite(p) and p > 0 for p in pos) or any(
            b <= a for a, b in itertools.pairwise(pos)
        ):
            raise ValueError(f"positions must be finite, positive and increasing, got {pos!r}")
    added = list(extras) if len(pos) == main else []
    grow = sum(added)
    if added and line_length is not None and line_length - grow < main * 2:
        raise ValueError(
            f"line_length={line_length} leaves no room for {main} columns next to the "
            f"{len(added)} extra column(s) ({grow} characters), give at least "
            f"{main * 2 + grow}"
        )
    if line_length is not None:
        total = line_length
        span = total - grow
    else:
        span = default_length
        total = span + grow
    relative = pos[-1] <= 1
    ends = [int(span * p) for p in pos] if relative else [int(p) for p in pos]
    for width in added:
        ends.append(ends[-1] + width)
    if added and ends[-1] < total:
        ends[-1] = total  # as Keras: the Trainable column ends at the rulers' end
    result = Columns(ends, total)
    if any(w < 1 for w in result.widths):
        raise ValueError(
            f"line_length={total} and positions={ends} leave no room for some of the columns "
            f"{list(names)}"
        )
    return result


def _tokens(text: str) -> list[str]:
    """``text`` split at the spaces outside brackets: words and whole shapes."""
    tokens: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}" and depth:
            depth -= 1
        if ch == " " and depth == 0:
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        tokens.append("".join(current))
    return tokens


def _hard_split(token: str, width: int) -> tuple[str, str]:
    """A token wider than ``width``: cut after its last comma, dot or underscore that fits,
    else at ``width``."""
    head = token[:width]
    for marks in (",", "._"):
        cut = max(head.rfind(m) for m in marks) + 1
        if cut > width // 3:
            return token[:cut].rstrip(), token[cut:].lstrip()
    return head, token[width:]


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters, broken between words and between shapes;
    a word or shape wider than ``width`` alone is cut after a comma or a dot."""
    if width < 1:
        return [""]
    if len(text) <= width:
        return [text]
    lines: list[str] = []
    current = ""
    for token in _tokens(text):
        candidate = f"{current} {token}" if current else token
        if len(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while len(token) > width:
            piece, token = _hard_split(token, width)
            lines.append(piece)
        current = token
    lines.append(current)
    return lines


def format_row(fields: Sequence[Sequence[str]], cols: Columns) -> list[str]:
    """The printed lines of one row; each field is a list of entries, each entry wrapped."""
    widths = cols.widths
    if all(len(e) == 1 and len(e[0]) <= w for e, w in zip(fields, widths, strict=False)):
        # Fast path: everything fits on one line.
        parts = [
            e[0].ljust(w + (1 if i < len(widths) - 1 else 0))
            for i, (e, w) in enumerate(zip(fields, widths, strict=False))
        ]
        return ["".join(parts).rstrip()]
    cells = []
    for entries, width in zip(fields, cols.widths, strict=False):
        cell: list[str] = []
        for entry in entries:
            indent = len(entry) - len(entry.lstrip(" "))
            pad = " " * min(indent, max(width - 1, 0))
            for piece in wrap(entry.lstrip(" "), max(width - len(pad), 1)):
                cell.append(pad + piece)
        cells.append(cell or [""])
    height = max(len(c) for c in cells)
    lines = []
    for row in range(height):
        line = ""
        for start, cell in zip(cols.starts, cells, strict=False):
            line = line.ljust(start)
            if row < len(cell):
                line += cell[row]
        lines.append(line.rstrip())
    return lines
