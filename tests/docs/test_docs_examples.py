"""Every ```python block in docs/ runs, so no example can rot.

The blocks of one page run in order in one namespace, in a fresh temporary working
directory. A block whose fence says ```python skip is shown but not run (kept for what
cannot run here, such as launching torchrun across machines).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(page: Path) -> list[tuple[int, str]]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if "skip" in match.group(1).split():
            continue
        line = text.count("\n", 0, match.start()) + 2
        found.append((line, match.group(2)))
    return found


PAGES = sorted(p for p in DOCS.rglob("*.md") if blocks(p))


def test_the_docs_have_examples() -> None:
    assert len(PAGES) >= 1, f"no runnable examples found under {DOCS}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": "__main__"}
    for line, source in blocks(page):
        code = compile(source, f"{page.name}:{line}", "exec")
        try:
            exec(code, namespace)
        except Exception as error:
            raise AssertionError(
                f"the example at {page.relative_to(DOCS)} line {line} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
    assert os.getcwd() == str(tmp_path)
