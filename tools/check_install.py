"""Install each package as the README says, in a fresh virtual environment of its own.

    python tools/check_install.py [PACKAGE ...]

For each package: a new venv, then the documented command
`pip install ./packages/kregistry ./packages/<name>` (`./packages/<name>` alone for a
package that does not depend on kregistry; torch pinned to the local CPU build by
tools/constraints.txt), then checks that `pip check` is clean, the package
imports with `__version__` equal to its metadata, the LICENSE file is in the installed
distribution, and its console script (if any) answers `--help`. Exits non-zero on the
first failure, naming the package and the step.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["kregistry", "kdata", "kio", "kviz", "kparallel"]

CHECK = """
import importlib, importlib.metadata as md, sys
name, dist = sys.argv[1], sys.argv[2]
module = importlib.import_module(name)
assert module.__version__ == md.version(dist), (module.__version__, md.version(dist))
files = [str(f) for f in md.files(dist) or []]
assert any(f.endswith("LICENSE") for f in files), f"no LICENSE among {dist}'s files"
print(f"{name} {module.__version__}: imports, LICENSE shipped")
"""


def run(command: list[str], what: str) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(
            f"check_install: {what} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


def check(package: str, scratch: Path) -> None:
    project = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
    dist = project["project"]["name"]
    env = scratch / package
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    python = str(env / "bin" / "python")
    # kregistry's folder is named where the package depends on it (no index has it yet).
    deps = project["project"]["dependencies"]
    needs_registry = any(d.startswith("kutorch-kregistry") for d in deps)
    targets = [f"./packages/{package}"]
    if needs_registry:
        targets.insert(0, "./packages/kregistry")
    print(f"check_install: {package}: pip install {' '.join(targets)}", flush=True)
    run(
        [python, "-m", "pip", "install", "-q", "-c", "tools/constraints.txt", *targets],
        f"{package}: pip install",
    )
    run([python, "-m", "pip", "check"], f"{package}: pip check")
    run([python, "-c", CHECK, package, dist], f"{package}: import")
    for script in project["project"].get("scripts", {}):
        run([str(env / "bin" / script), "--help"], f"{package}: console script {script} --help")
    print(f"check_install: {package} ({dist}) installs alone and works", flush=True)


def main(argv: list[str]) -> None:
    packages = argv or PACKAGES
    unknown = sorted(set(packages) - set(PACKAGES))
    if unknown:
        sys.exit(f"check_install: unknown package(s) {unknown}; choose from {PACKAGES}")
    with tempfile.TemporaryDirectory(prefix="kutorch-install-") as scratch:
        for package in packages:
            check(package, Path(scratch))


if __name__ == "__main__":
    main(sys.argv[1:])
