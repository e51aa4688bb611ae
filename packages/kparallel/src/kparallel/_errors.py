"""kparallel's public exceptions.

Each is built from one message string (torch re-raises a DataLoader worker's error as
``type(exc)(message)``), pickles with its type and attributes, and subclasses the built-in
type a caller would catch anyway (``ValueError``).
"""

from __future__ import annotations

__all__ = ["MergeError", "RankMismatchError"]


class MergeError(ValueError):
    """``multi_gpu_model`` cannot merge a part of the replicas' outputs by its rule.

    Attributes:
        path: Where in the output the part sits, e.g. ``"output['count']"`` (``None``
            when the error was rebuilt from its message alone).

    Examples:
        >>> err = MergeError("output['n'] is an int", path="output['n']")
        >>> isinstance(err, ValueError), err.path
        (True, "output['n']")
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RankMismatchError(ValueError):
    """The ranks of a process group called a collective helper with arguments that disagree.

    Raised on every rank with the same message, instead of a wrong value on some ranks and
    a hang on others.

    Attributes:
        by_rank: What each rank passed, index = rank (``None`` when rebuilt from the
            message alone).

    Examples:
        >>> err = RankMismatchError("names differ", by_rank=[["a"], ["b"]])
        >>> err.by_rank
        [['a'], ['b']]
    """

    def __init__(self, message: str, *, by_rank: list[object] | None = None) -> None:
        super().__init__(message)
        self.by_rank = by_rank
