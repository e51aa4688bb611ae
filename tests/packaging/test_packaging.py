"""Each package declares what it imports, and nothing else; one licence; one version source.

Read from the sources and pyprojects, so it runs anywhere (no install needed).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["kregistry", "kdata", "kio", "kviz", "kparallel"]
# Distribution name -> the module it provides, where they differ.
IMPORT_NAME = {f"kutorch-{name}": name for name in PACKAGES} | {"ipython": "IPython"}
# Declared without being imported, each for a stated reason.
DECLARED_FOR_OTHERS = {
    # torchinfo imports numpy without declaring it.
    ("kviz", "numpy"),
}


def pyproject(package: str) -> dict[str, object]:
    return tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())


def declared(package: str) -> set[str]:
    """Required and optional (extras) dependencies, by import name."""
    project = pyproject(package)["project"]
    deps = list(project["dependencies"])  # type: ignore[index]
    for extra in project.get("optional-dependencies", {}).values():  # type: ignore[attr-defined]
        deps += extra
    names = {re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower() for dep in deps}
    return {IMPORT_NAME.get(name, name) for name in names}


def imported(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "packages" / package / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    third_party = found - set(sys.stdlib_module_names) - {package, "__future__"}
    return third_party


@pytest.mark.parametrize("package", PACKAGES)
def test_declared_dependencies_are_the_imported_ones(package: str) -> None:
    extra = (
        declared(package) - imported(package) - {d for p, d in DECLARED_FOR_OTHERS if p == package}
    )
    missing = imported(package) - declared(package)
    assert not missing, f"{package} imports {sorted(missing)} without declaring them"
    assert not extra, f"{package} declares {sorted(extra)} but never imports them"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_a_sibling_but_kregistry(package: str) -> None:
    siblings = set(PACKAGES) - {package, "kregistry"}
    assert not imported(package) & siblings


@pytest.mark.parametrize("package", PACKAGES)
def test_distribution_name_licence_and_version_source(package: str) -> None:
    project = pyproject(package)["project"]
    assert project["name"] == f"kutorch-{package}"  # type: ignore[index]
    assert project["license"] == "MIT"  # type: ignore[index]
    assert project["license-files"] == ["LICENSE"]  # type: ignore[index]
    shipped = ROOT / "packages" / package / "LICENSE"
    assert shipped.read_text() == (ROOT / "LICENSE").read_text()
    init = (ROOT / "packages" / package / "src" / package / "__init__.py").read_text()
    assert re.search(r"__version__ = _metadata\.version\(\"kutorch-" + package + r"\"\)", init)
    assert not re.search(r"__version__\s*=\s*['\"]\d", init), "a version literal in __init__"


def test_the_family_shares_one_version() -> None:
    versions = {pyproject(p)["project"]["version"] for p in PACKAGES}  # type: ignore[index]
    assert len(versions) == 1, versions
