"""The whole check, as CI and the README run it: `hatch run ci`.

Steps, each must pass: Graphviz present (installed with apt-get when root), lint and
types, the full test suite, each package's tests alone in an environment holding only
that package, kregistry and the test tools, each package installed from the clone by the
README's pip command in a fresh venv, the fast tests against the oldest dependency
versions the pyprojects claim, and the docs site built in strict mode (which fails on
raw Sphinx roles). Extra arguments go to the full pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["kregistry", "kdata", "kio", "kviz", "kparallel"]


def ensure_graphviz() -> None:
    if shutil.which("dot"):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("ci: installing Graphviz with apt-get (the kviz tests render with `dot`)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "graphviz"], check=True, env=env)
        if shutil.which("dot"):
            return
    sys.exit(
        "ci: Graphviz's `dot` is not on PATH and cannot be installed from here. Install it "
        "(Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install graphviz; "
        "conda: conda install graphviz) and run again."
    )


def step(name: str, command: list[str]) -> None:
    print(f"\n=== ci: {name}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    code = subprocess.run(command, cwd=ROOT).returncode
    took = time.monotonic() - start
    if code == 5 and command[0] in {"pytest", "hatch"}:
        sys.exit(f"ci: {name}: no tests ran (pytest exit 5), which counts as a failure")
    if code != 0:
        sys.exit(f"ci: {name} failed with exit code {code} after {took:.0f} s")
    print(f"=== ci: {name} passed in {took:.0f} s", flush=True)


def main(argv: list[str]) -> None:
    ensure_graphviz()
    step("ruff", ["ruff", "check", "."])
    step("ruff format", ["ruff", "format", "--check", "."])
    step("mypy", ["mypy"])
    step("tests, all packages together", ["pytest", *argv])
    for package in PACKAGES:
        # A solo environment holds a non-editable copy of the package: rebuild it so the
        # tests see the code of this checkout, not a copy left by an earlier run.
        subprocess.run(["hatch", "env", "remove", f"solo.{package}"], cwd=ROOT, check=False)
        step(f"tests of {package} alone", ["hatch", "run", f"solo.{package}:test"])
    step("each package installed alone, as the README says", ["python", "tools/check_install.py"])
    subprocess.run(["hatch", "env", "remove", "lowest"], cwd=ROOT, check=False)
    step("fast tests on the oldest declared dependencies", ["hatch", "run", "lowest:test"])
    step("docs site, strict", ["hatch", "run", "docs:build"])
    print("\nci: all steps passed")


if __name__ == "__main__":
    main(sys.argv[1:])
