"""Docstrings render on the API pages as Markdown: no Sphinx roles, no doctest flags.

The docs build refuses them too (tools/docs_hooks.py); this check runs with the tests,
without the docs environment, and names the file and line.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "packages").glob("*/src/*/**/*.py"))


def _load_hooks() -> ModuleType:  # tools/ is not a package: load the hook module by its path
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()
# In the source a role is always followed by its backtick.
RAW_ROLE = re.compile(hooks.ROLES + "`")
DOCTEST_FLAG = hooks.DOCTEST_FLAG


def docstrings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                found.append((node.body[0].lineno, doc))
    return found


def test_sources_are_found() -> None:
    assert len(SOURCES) >= 20


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_docstrings_have_no_raw_markup(path: Path) -> None:
    bad = []
    for line, doc in docstrings(path):
        for pattern in (RAW_ROLE, DOCTEST_FLAG):
            bad += [f"line {line}: {m.group(0)}" for m in pattern.finditer(doc)]
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


def test_the_docs_hook_catches_what_this_test_catches() -> None:
    page = (
        "<p>Returns a <code>:class:</code><code>Sequence</code> "
        "&gt;&gt;&gt; f()  # doctest: +SKIP</p>"
    )
    assert hooks.problems(page) == [":class:Sequence", "doctest: +SKIP"]
    assert hooks.problems("<p>Returns a <code>Sequence</code>: see <code>kdata</code>.</p>") == []
