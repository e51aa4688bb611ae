"""MkDocs hooks: the docs build fails on docstring markup that would render as raw text.

The API pages are rendered from docstrings, which are Markdown here. A Sphinx role
(`:class:`Foo``) or a doctest directive (`# doctest: +SKIP`) would show up verbatim on
the page, so the build stops and names the page and the offending text instead.
"""

from __future__ import annotations

import html
import re
from typing import Any

# The Sphinx roles that docstrings must not use (tests/docs/test_docstrings.py shares it).
ROLES = r":(?:py:)?(?:class|func|meth|attr|mod|exc|data|obj|ref|const|term):"
# A role as it survives Markdown rendering: ":class:" then a code span or a name.
RAW_ROLE = re.compile(ROLES + r"`?[\w.~]+")
DOCTEST_FLAG = re.compile(r"doctest:\s*[+-][A-Z_]+")
TAG = re.compile(r"<[^>]+>")


def problems(page_html: str) -> list[str]:
    """The raw roles and doctest flags visible in a rendered page, each once."""
    text = html.unescape(TAG.sub("", page_html))
    found = [m.group(0) for m in RAW_ROLE.finditer(text)]
    found += [m.group(0) for m in DOCTEST_FLAG.finditer(text)]
    return list(dict.fromkeys(found))


def on_page_content(html_text: str, page: Any, **_: Any) -> str:
    found = problems(html_text)
    if found:
        from mkdocs.exceptions import PluginError  # only the docs environment has mkdocs

        raise PluginError(
            f"{page.file.src_path}: raw markup would show on the page: {', '.join(found[:10])}"
            f"{' ...' if len(found) > 10 else ''}. Docstrings are Markdown: write `Name` or "
            f"[`Name`][package.Name] instead of a Sphinx role, and put examples that cannot "
            f"run in a ```python block instead of a doctest flag."
        )
    return html_text
