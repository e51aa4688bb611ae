"""Shared measuring and reporting for the benchmarks in tools/bench/.

Every comparison is measured in the same run, interleaved (ours, baseline, ours, ...),
and reported as medians and a ratio: these machines are noisy, so single times mean little.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Comparison", "compare", "fmt_value", "median_time", "print_header"]


def median_time(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Median seconds of one call of ``fn`` over ``repeat`` rounds of ``number`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


@dataclass
class Comparison:
    """One line of a benchmark report: our figure, the baseline's, and the ratio."""

    name: str
    ours: float
    baseline: float
    baseline_name: str
    unit: str = "s"
    higher_is_better: bool = False
    goal: float | None = None  # the speed-up (ours vs baseline) the issue asks for

    @property
    def speedup(self) -> float:
        """How many times better ours is than the baseline (>1 is better)."""
        if self.higher_is_better:
            return self.ours / self.baseline
        return self.baseline / self.ours

    def line(self) -> str:
        verdict = ""
        if self.goal is not None:
            verdict = "  ok" if self.speedup >= self.goal else f"  BELOW GOAL {self.goal:g}x"
        return (
            f"{self.name:<58} ours {fmt_value(self.ours, self.unit):>12}   "
            f"{self.baseline_name} {fmt_value(self.baseline, self.unit):>12}   "
            f"speed-up {self.speedup:6.2f}x{verdict}"
        )


def fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
            if value >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value * 1e9:.3g} ns"
    return f"{value:.4g} {unit}"


def compare(
    name: str,
    ours: Callable[[], object],
    baseline: Callable[[], object],
    baseline_name: str,
    *,
    repeat: int = 7,
    number: int = 1,
    per: int = 1,
    goal: float | None = None,
) -> Comparison:
    """Time ``ours`` and ``baseline`` interleaved and return the medians as a Comparison.

    ``per``: each call of ``ours``/``baseline`` does this many operations (a loop inside,
    to keep timer overhead out); the figures reported are per operation.
    """
    ours_times, base_times = [], []
    for _ in range(repeat):
        ours_times.append(median_time(ours, repeat=1, number=number))
        base_times.append(median_time(baseline, repeat=1, number=number))
    result = Comparison(
        name,
        statistics.median(ours_times) / per,
        statistics.median(base_times) / per,
        baseline_name,
        goal=goal,
    )
    print(result.line(), flush=True)
    return result


def print_header(title: str) -> None:
    print(f"\n## {title}", flush=True)
