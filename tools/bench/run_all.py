"""Run every package's benchmarks: `hatch run bench:all` (add --quick for a short run).

Each tools/bench/bench_<package>.py (and bench_<package>_<topic>.py) has `main(quick: bool) -> list[Comparison]`; this
prints their lines as they come, then a summary table of all ratios.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Comparison, fmt_value  # noqa: E402

ORDER = ["kregistry", "kdata", "kio", "kviz", "kparallel"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--markdown", type=Path, help="also write the results as a markdown table")
    parser.add_argument("packages", nargs="*", default=ORDER, help="which packages (default all)")
    args = parser.parse_args()
    print(
        f"# k* benchmarks on {platform.machine()}, {platform.python_version()}, quick={args.quick}"
    )
    results: list[tuple[str, Comparison]] = []
    for package in args.packages:
        # bench_<package>.py and any bench_<package>_<topic>.py, in name order.
        paths = sorted(HERE.glob(f"bench_{package}.py")) + sorted(
            HERE.glob(f"bench_{package}_*.py")
        )
        if not paths:
            print(f"\n## {package}: no benchmark yet")
            continue
        for path in paths:
            module = importlib.import_module(path.stem)
            results.extend((package, c) for c in module.main(quick=args.quick))
    print("\n# summary (speed-up = how many times better ours is than the baseline)")
    below = 0
    for package, c in results:
        print(f"{package:<10} {c.line()}")
        below += c.goal is not None and c.speedup < c.goal
    print(f"\n{len(results)} comparisons, {below} below their goal")
    if args.markdown:
        args.markdown.write_text(markdown_table(results), encoding="utf-8")
        print(f"markdown table written to {args.markdown}")
    return 0


def markdown_table(results: list[tuple[str, Comparison]]) -> str:
    lines = [
        "| package | comparison | ours | baseline | speed-up | goal |",
        "|---|---|---|---|---|---|",
    ]
    for package, c in results:
        if c.goal is None:
            verdict = "(none)"
        elif c.speedup >= c.goal:
            verdict = f">= {c.goal:.2f}x: met"
        else:
            verdict = f">= {c.goal:.2f}x: **missed**"
        lines.append(
            f"| {package} | {c.name} | {fmt_value(c.ours, c.unit)} | {c.baseline_name}: "
            f"{fmt_value(c.baseline, c.unit)} | {c.speedup:.2f}x | {verdict} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
