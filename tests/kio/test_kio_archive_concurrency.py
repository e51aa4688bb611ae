"""Extraction under concurrency, with real processes.

- `model` and `model-v2` extracted at the same time into one folder: the clean-up of
  `model`'s stale temporary folders must not touch `model-v2`'s (a prefix match did,
  and `model-v2` ended with missing files while both calls succeeded);
- a temporary folder whose owner is alive (a stopped process) is kept; once its owner is
  killed, the next extraction of that archive removes it;
- a process that deletes files from an extraction in progress makes it fail loudly, and
  no extraction marker is written until every member is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _kio_helpers import FaultServer, Sandbox, tar_bytes

import kio

# One child script for all roles; the role is its first argument.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    import kio

    role, args = sys.argv[1], sys.argv[2:]
    if role == "loop":  # extract one archive again and again until told to stop
        cache, fname, url, started, stop = args
        deadline = time.time() + 120
        busy = 0
        while time.time() < deadline:
            path = kio.get_file(fname, url, extract=True, cache_dir=cache, progress=False)
            if not os.path.exists(started):
                open(started, "w").close()
            elif not os.path.exists(stop):
                busy += 1
            else:
                break
            stat = os.stat(path)  # a new mtime: the marker no longer matches
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
        print(busy)
    elif role == "once":  # wait for the loop to run, extract once, then stop the loop
        cache, fname, url, started, stop = args
        waited = time.time() + 120
        while not os.path.exists(started):
            if time.time() > waited:
                sys.exit("the loop never started")
            time.sleep(0.005)
        try:
            kio.get_file(fname, url, extract=True, cache_dir=cache, progress=False)
        finally:
            open(stop, "w").close()
    elif role == "extract":  # the public function, without get_file's lock
        archive, folder = args
        kio.extract_archive(archive, folder)
    elif role == "deleter":  # remove files from any extraction in progress
        folder, ready, stop = args
        removed = 0
        open(ready, "w").close()
        while not os.path.exists(stop):
            for name in os.listdir(folder):
                if name.startswith(".kio-extract-") and not name.endswith(".old"):
                    for root, _, files in os.walk(os.path.join(folder, name)):
                        for file in files:
                            try:
                                os.unlink(os.path.join(root, file))
                                removed += 1
                            except OSError:
                                pass
        print(removed)
    """
)


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 180) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def many_files(top: str, count: int) -> tuple[bytes, dict[str, bytes]]:
    files = {f"{top}/part{i // 500}/f{i}.txt": f"{top} {i}\n".encode() * 4 for i in range(count)}
    return tar_bytes(list(files.items()), mode="w:gz"), files


def assert_complete(folder: Path, files: dict[str, bytes]) -> None:
    missing = [name for name, data in files.items() if not (folder / name).is_file()]
    assert not missing, f"{len(missing)} of {len(files)} files missing, e.g. {missing[:3]}"
    for name, data in files.items():
        assert (folder / name).read_bytes() == data


def temporaries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith(".kio-extract-"))


@pytest.mark.slow
def test_prefix_named_archives_extracted_at_once(server: FaultServer, box: Sandbox) -> None:
    # Archives named without a suffix, as in the report; their top-level folders differ.
    small, _ = many_files("weights", 1)
    big, files = many_files("weights-v2", 4000)
    url_small = server.add("/model", small)
    url_big = server.add("/model-v2", big)
    started, stop = str(box.src / "started"), str(box.src / "stop")
    looping = child("loop", str(box.cache), "model", url_small, started, stop)
    once = child("once", str(box.cache), "model-v2", url_big, started, stop)
    try:
        finish(once)
    finally:
        Path(stop).touch()
        busy = int(finish(looping))
    # The loop re-extracted `model` (and cleaned its temporaries) while model-v2 ran.
    assert busy >= 2, busy
    datasets = box.cache / "datasets"
    assert_complete(datasets, files)
    marker = json.loads((datasets / ".kio" / "model-v2.extracted.json").read_text())
    assert marker["entries"] == ["weights-v2"]
    assert temporaries(datasets) == []


@pytest.mark.slow
def test_stale_temporaries_only_when_their_owner_is_gone(server: FaultServer, box: Sandbox) -> None:
    data, files = many_files("big", 6000)
    url = server.add("/big.tar.gz", data)
    archive = kio.get_file("big.tar.gz", url, cache_dir=box.cache)
    datasets = box.cache / "datasets"
    other = child("extract", archive, str(datasets))
    deadline = time.time() + 60
    while not temporaries(datasets) and other.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    os.kill(other.pid, signal.SIGSTOP)  # alive, mid-extraction
    try:
        theirs = temporaries(datasets)
        assert len(theirs) == 1, "the other process finished before it could be stopped"
        # A temporary of an archive whose name only starts the same is never touched.
        kio.get_file("big.tar.gz", url, extract=True, cache_dir=box.cache)
        assert temporaries(datasets) == theirs  # its owner is alive: kept
        assert_complete(datasets, files)
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    assert temporaries(datasets) == theirs  # left behind by a killed process
    stat = os.stat(archive)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))  # extract again
    kio.get_file("big.tar.gz", url, extract=True, cache_dir=box.cache)
    assert temporaries(datasets) == []  # its owner is gone: removed
    assert_complete(datasets, files)


@pytest.mark.slow
def test_no_marker_until_every_member_is_in_place(server: FaultServer, box: Sandbox) -> None:
    data, files = many_files("set", 4000)
    url = server.add("/set.tar.gz", data)
    archive = kio.get_file("set.tar.gz", url, cache_dir=box.cache)
    datasets = box.cache / "datasets"
    marker = datasets / ".kio" / "set.tar.gz.extracted.json"
    ready, stop = box.src / "ready", str(box.src / "stop")
    deleter = child("deleter", str(datasets), str(ready), stop)
    while not ready.exists():
        assert deleter.poll() is None, deleter.communicate()
        time.sleep(0.01)
    try:
        with pytest.raises(OSError) as info:
            kio.get_file("set.tar.gz", url, extract=True, cache_dir=box.cache)
    finally:
        Path(stop).touch()
    assert int(finish(deleter)) > 0
    assert "set.tar.gz" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    assert temporaries(datasets) == []
    assert not (datasets / "set").exists()  # nothing half-extracted moved into place
    kio.get_file("set.tar.gz", url, extract=True, cache_dir=box.cache)
    assert_complete(datasets, files)
    assert marker.exists()
    digest = hashlib.sha256(Path(archive).read_bytes()).hexdigest()
    assert digest == hashlib.sha256(data).hexdigest()
