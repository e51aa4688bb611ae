"""Keras's summary table: column positions from ``line_length``/``positions``, and rows whose
long fields wrap onto more lines instead of being cut (no line exceeds ``line_length``)."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence

__all__ = ["Columns", "columns", "format_row", "wrap"]

_TRAINABLE_WIDTH = 11  # Keras widens the table by this much for the "Trainable" column
_BREAK_AFTER = " ,.([_-"


class Columns:
    """Absolute end positions of each column and the total width."""

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


def columns(
    names: Sequence[str],
    line_length: int | None,
    positions: Sequence[float] | None,
    *,
    default_length: int,
    default_positions: Sequence[float],
    trainable: bool,
) -> Columns:
    """Resolve Keras's ``line_length`` and ``positions`` for the columns ``names``.

    ``positions`` are each column's end: fractions of ``line_length`` when the last one is at
    most 1, else absolute character positions. With ``trainable``, the last column named in
    ``names`` is Keras's extra "Trainable" column, which may be left out of ``positions``.

    Raises:
        TypeError: non-numeric ``line_length`` or ``positions``.
        ValueError: a wrong count, decreasing positions, or columns with no room left.
    """
    count = len(names)
    if line_length is not None:
        if not isinstance(line_length, numbers.Integral) or isinstance(line_length, bool):
            raise TypeError(f"line_length must be an int or None; got {line_length!r}")
        line_length = int(line_length)
        if line_length < count * 2:
            raise ValueError(
                f"line_length must leave room for {count} columns (at least {count * 2}); "
                f"got {line_length}"
            )
    main = count - 1 if trainable else count
    if positions is None:
        pos = list(default_positions)
    else:
        # list() first: a generator would be used up by the type check below.
        pos = list(positions) if not isinstance(positions, (str, bytes)) else []
        if not pos or not all(isinstance(p, numbers.Real) and not isinstance(p, bool) for p in pos):
            raise TypeError(f"positions must be a list of numbers; got {positions!r}")
        pos = [float(p) for p in pos]
        if len(pos) not in ((main, count) if trainable else (count,)):
            expected = f"{main} or {count}" if trainable else f"{count}"
            raise ValueError(
                f"positions must give {expected} column ends for the columns "
                f"{list(names)}; got {len(pos)}: {pos!r}"
            )
        if not all(math.isfinite(p) and p > 0 for p in pos) or any(
            b <= a for a, b in itertools.pairwise(pos)
        ):
            raise ValueError(f"positions must be finite, positive and increasing; got {pos!r}")
    add_trainable = trainable and len(pos) == main
    if add_trainable and line_length is not None and line_length - _TRAINABLE_WIDTH < main * 2:
        raise ValueError(
            f"line_length={line_length} leaves no room for {main} columns next to the "
            f"Trainable column ({_TRAINABLE_WIDTH} characters); give at least "
            f"{main * 2 + _TRAINABLE_WIDTH}"
        )
    relative = pos[-1] <= 1
    if line_length is not None:
        total = line_length
        span = total - _TRAINABLE_WIDTH if add_trainable else total
    elif relative:
        span = default_length
        total = span + (_TRAINABLE_WIDTH if add_trainable else 0)
    else:
        span = int(pos[-1])
        total = span + (_TRAINABLE_WIDTH if add_trainable else 0)
    ends = [int(span * p) for p in pos] if relative else [int(p) for p in pos]
    if add_trainable:
        ends.append(span + _TRAINABLE_WIDTH)
    if ends[-1] > total:
        raise ValueError(f"positions {pos!r} end at {ends[-1]}, past line_length={total}")
    result = Columns(ends, total)
    if any(w < 1 for w in result.widths):
        raise ValueError(
            f"line_length={total} and positions={ends} leave no room for some of the columns "
            f"{list(names)}"
        )
    return result


def wrap(text: str, width: int) -> list[str]:
    """Split ``text`` into lines of at most ``width`` characters, breaking after spaces,
    commas, dots and brackets where possible (shapes and dotted names break cleanly)."""
    if width < 1:
        return [""]
    lines: list[str] = []
    while len(text) > width:
        cut = 0
        for i in range(width, 0, -1):
            if text[i - 1] in _BREAK_AFTER:
                cut = i
                break
        if cut < max(1, width // 3):
            cut = width
        lines.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    lines.append(text)
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
