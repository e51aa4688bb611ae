"""Run every package's benchmarks: `hatch run bench:all` (add --quick for a short run).

Each tools/bench/bench_<package>.py has `main(quick: bool) -> list[Comparison]`; this
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

from _common import Comparison  # noqa: E402

ORDER = ["kregistry", "kdata", "kio", "kviz", "kparallel"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("packages", nargs="*", default=ORDER, help="which packages (default all)")
    args = parser.parse_args()
    print(
        f"# k* benchmarks on {platform.machine()}, {platform.python_version()}, quick={args.quick}"
    )
    results: list[tuple[str, Comparison]] = []
    for package in args.packages:
        path = HERE / f"bench_{package}.py"
        if not path.exists():
            print(f"\n## {package}: no benchmark yet")
            continue
        module = importlib.import_module(f"bench_{package}")
        results.extend((package, c) for c in module.main(quick=args.quick))
    print("\n# summary (speed-up = how many times better ours is than the baseline)")
    below = 0
    for package, c in results:
        print(f"{package:<10} {c.line()}")
        below += c.goal is not None and c.speedup < c.goal
    print(f"\n{len(results)} comparisons, {below} below their goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
