"""Argument checks shared by kio's public functions."""

from __future__ import annotations

import operator

__all__ = ["check_int"]


def check_int(value: object, argument: str, minimum: int) -> int:
    """`value` as an int (int-likes such as numpy integers too, bools refused: TypeError),
    at least `minimum` (else ValueError); messages name `argument`."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{argument} must be an int >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{argument} must be an int >= {minimum}, got {value!r}")
    return int(number)
