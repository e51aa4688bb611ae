"""Fixtures of the kio tests.

Every test runs in a sandbox: HOME, TMPDIR and the kio/Keras/proxy variables point into
the test's own folder, and after the test the sandbox checks that nothing was written
outside the cache folder (HOME and TMPDIR stay empty, no unexpected top-level entry) and
that every file at a final path in the cache is complete (byte-equal to a version the
server or the test provided), with no extraction temporaries left behind.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Spawned children get the parent's sys.path, so they can import the helpers too.
HERE = str(Path(__file__).parent)
sys.path.insert(0, HERE)

from _kio_helpers import ENV_TO_CLEAR, FaultServer, Sandbox, check_sandbox  # noqa: E402


@pytest.fixture(autouse=True)
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    sandbox = Sandbox(
        root=tmp_path,
        cache=tmp_path / "cache",  # not created: get_file must create it
        src=tmp_path / "src",
        home=tmp_path / "home",
        tmp=tmp_path / "tmp",
    )
    for folder in (sandbox.src, sandbox.home, sandbox.tmp):
        folder.mkdir()
    for name in ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(sandbox.home))
    monkeypatch.setenv("TMPDIR", str(sandbox.tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(sandbox.tmp))
    yield sandbox
    for server in sandbox.servers:
        server.close()
    check_sandbox(sandbox)


@pytest.fixture
def server(box: Sandbox) -> FaultServer:
    srv = FaultServer()
    box.servers.append(srv)
    return srv
