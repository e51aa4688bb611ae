"""file:// origins, offline mode, many processes at once, and the command line."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from _kio_helpers import (
    HERE,
    FaultServer,
    Sandbox,
    fetch_at,
    fetch_plain,
    make_tar,
    payload,
    sha256,
)

from kio import DownloadError, OfflineError, UnsafeArchiveError, get_file


def test_file_origin(box: Sandbox) -> None:
    data = payload(100_000, seed=30)
    source = box.source("local.bin", data)
    url = source.as_uri()
    path = get_file(origin=url, file_hash=sha256(data), cache_dir=box.cache)
    assert path == str(box.cache / "datasets" / "local.bin")
    assert Path(path).read_bytes() == data
    assert get_file(origin=url, cache_dir=box.cache, progress=True) == path
    with pytest.raises(ValueError, match="expected"):
        get_file("other.bin", url, file_hash="0" * 64, cache_dir=box.cache)
    assert not (box.cache / "datasets" / "other.bin").exists()
    assert source.read_bytes() == data  # the source is never touched


def test_file_origin_missing_and_remote_host(box: Sandbox) -> None:
    missing = (box.src / "nope.bin").as_uri()
    with pytest.raises(FileNotFoundError, match=r"nope\.bin"):
        get_file(origin=missing, cache_dir=box.cache)
    with pytest.raises(ValueError, match="host"):
        get_file(origin="file://server/share/x.bin", cache_dir=box.cache)
    assert not (box.cache / "datasets" / "nope.bin").exists()


def test_offline_mode(server: FaultServer, box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    data = payload(1000, seed=31)
    url = server.add("/o.bin", data)
    monkeypatch.setenv("KIO_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        get_file("o.bin", url, cache_dir=box.cache, retries=5, backoff=5.0)
    assert time.perf_counter() - start < 0.5
    expected_path = str(box.cache / "datasets" / "o.bin")
    assert url in str(info.value) and expected_path in str(info.value)
    assert info.value.path == expected_path and isinstance(info.value, FileNotFoundError)
    assert server.hits("/o.bin") == []
    path = get_file("o.bin", url, cache_dir=box.cache, offline=False)  # the keyword wins
    assert get_file("o.bin", url, file_hash=sha256(data), cache_dir=box.cache) == path  # hit
    with pytest.raises(OfflineError, match="force_download"):
        get_file("o.bin", url, cache_dir=box.cache, force_download=True)
    Path(path).write_bytes(b"corrupt")
    box.known["o.bin"].append(b"corrupt")
    # One coherent message: no "downloading it again" warning, then a refusal.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OfflineError) as wrong:
            get_file("o.bin", url, file_hash=sha256(data), cache_dir=box.cache)
    message = str(wrong.value)
    assert "offline" in message and "not the expected" in message and sha256(data) in message
    assert "again" not in message
    assert len(server.hits("/o.bin")) == 1
    local = box.source("l.bin", b"local")
    assert Path(get_file(origin=local.as_uri(), cache_dir=box.cache)).read_bytes() == b"local"


@pytest.mark.slow
def test_eight_processes_one_download(server: FaultServer, box: Sandbox) -> None:
    data = payload(2 << 20, seed=32)
    # A slow server (about 0.5 s for the body) keeps the download going while all start.
    url = server.add("/shared.bin", data, chunk_delay=0.016)
    start_at = time.time() + 2.0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        args = [(url, str(box.cache), sha256(data), start_at)] * 8
        paths = pool.starmap(fetch_at, args)
    assert len(set(paths)) == 1
    assert Path(paths[0]).read_bytes() == data
    assert server.body_hits("/shared.bin") == 1
    assert len(server.hits("/shared.bin")) == 1


@pytest.mark.slow
def test_killed_download_leaves_no_final_file_and_resumes(
    server: FaultServer, box: Sandbox
) -> None:
    data = payload(4 << 20, seed=33)
    url = server.add("/killed.bin", data, chunk_delay=0.03)  # about 2 s for the body
    code = (
        "import kio, sys; kio.get_file('killed.bin', sys.argv[1], cache_dir=sys.argv[2], "
        "progress=False)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, url, str(box.cache)])
    part = box.cache / "datasets" / ".kio" / "killed.bin.part"
    final = box.cache / "datasets" / "killed.bin"
    deadline = time.time() + 30
    while time.time() < deadline and not final.exists():
        if part.exists() and part.stat().st_size >= 1 << 20:
            break
        time.sleep(0.02)
    child.kill()
    child.wait()
    assert not (box.cache / "datasets" / "killed.bin").exists()
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    server.add("/killed.bin", data)  # full speed now
    path = get_file("killed.bin", url, file_hash=sha256(data), cache_dir=box.cache)
    assert Path(path).read_bytes() == data
    last = server.hits("/killed.bin")[-1]
    assert last.status == 206 and last.headers["Range"] == f"bytes={kept}-"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "kio", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_command_line(server: FaultServer, box: Sandbox) -> None:
    archive = make_tar(str(box.src / "cli.tar.gz"), [("cli/x.txt", b"x")])
    data = Path(archive).read_bytes()
    box.known["cli.tar.gz"].append(data)
    url = server.add("/cli.tar.gz", data)
    done = _cli(url, "--file-hash", sha256(data), "--extract", "--cache-dir", str(box.cache))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(box.cache / "datasets" / "cli.tar.gz")
    assert (box.cache / "datasets" / "cli" / "x.txt").read_bytes() == b"x"
    bad = _cli(server.url("/missing"), "--cache-dir", str(box.cache), "--retries", "0")
    assert bad.returncode == 1 and bad.stdout == ""
    assert "404" in bad.stderr and "Traceback" not in bad.stderr
    wrong = _cli(url, "--fname", "w.tar.gz", "--file-hash", "0" * 64, "--cache-dir", str(box.cache))
    assert wrong.returncode == 1 and "expected" in wrong.stderr
    assert not (box.cache / "datasets" / "w.tar.gz").exists()


@pytest.mark.slow
def test_errors_travel_back_from_spawned_workers(server: FaultServer, box: Sandbox) -> None:
    # A DataLoader or multiprocessing worker's error is pickled to the parent; kio's
    # errors carry keyword-only fields that must survive the trip.
    missing = server.url("/absent.bin")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        with pytest.raises(DownloadError) as failed:
            # (an error that cannot be unpickled hangs the pool: hence the timeout)
            pool.apply_async(fetch_plain, ("absent.bin", missing, str(box.cache), False)).get(30)
        with pytest.raises(OfflineError) as offline:
            pool.apply_async(fetch_plain, ("absent.bin", missing, str(box.cache), True)).get(30)
    assert failed.value.status == 404 and failed.value.url == missing
    assert missing in str(failed.value)
    assert offline.value.path == str(box.cache / "datasets" / "absent.bin")
    assert isinstance(offline.value, FileNotFoundError)
    error = UnsafeArchiveError("a.tar", "../x", "climbs out")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.archive, copy.member, copy.reason, str(copy)) == (
        "a.tar",
        "../x",
        "climbs out",
        str(error),
    )


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    """The `kio` console script installed beside this Python ([project.scripts])."""
    script = Path(sys.executable).parent / "kio"
    if not script.exists():
        pytest.skip("the kio console script is not installed in this environment")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=60)


def test_console_script_and_help(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/s.bin", b"script")
    done = _script(url, "--cache-dir", str(box.cache), "--file-hash", "sha256:" + sha256(b"script"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(box.cache / "datasets" / "s.bin")
    helped = _script("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: kio ")
    text = " ".join(helped.stdout.split())
    for fallback in ("$KIO_HOME", "$KERAS_HOME", "~/.keras", "$KIO_OFFLINE"):
        assert fallback in text
    module = _cli("--help")
    assert module.stdout.startswith("usage: python -m kio ")


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--file-hash", "xyz"], "--file-hash"),
        (["--file-hash", "0" * 30], "--file-hash"),
        (["--file-hash", "md5:" + "0" * 64, "--hash-algorithm", "sha256"], "--hash-algorithm"),
        (["--retries", "-1"], "--retries"),
        (["--fname", "/abs/x.bin"], "--fname"),
        (["--fname", "../x.bin"], "--fname"),
        (["--cache-subdir", "../up"], "--cache-subdir"),
        (["--timeout", "0"], "--timeout"),
        (["--archive-format", "rar", "--extract"], "rar"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_cli_usage_errors_exit_2_and_name_flags(
    server: FaultServer, box: Sandbox, args: list[str], flag: str
) -> None:
    url = server.add("/u.bin", b"u")
    done = _cli(url, "--cache-dir", str(box.cache), *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("usage: python -m kio")
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("python -m kio: error: ") and flag in error
    for python_name in ("file_hash", "hash_algorithm", "cache_subdir", "fname=", "retries="):
        assert python_name not in error
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert server.hits("/u.bin") == []


def test_cli_errors_are_one_line(server: FaultServer, box: Sandbox) -> None:
    from _kio_helpers import tar_bytes, tar_link

    evil = tar_bytes([("ok.txt", b"ok"), ("../evil.txt", b"evil")])
    box.known["evil.tar.gz"].append(evil)
    dangling = tar_bytes([tar_link("hl", "missing.txt", hard=True)])
    box.known["dangling.tar.gz"].append(dangling)
    cases = {
        "404": [server.url("/nothing.bin"), "--retries", "0"],
        "unsafe": [server.add("/evil.tar.gz", evil), "--extract"],
        "dangling": [server.add("/dangling.tar.gz", dangling), "--extract"],
    }
    for case, args in cases.items():
        done = _cli(*args, "--cache-dir", str(box.cache))
        assert done.returncode == 1, (case, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("python -m kio: error: "), (case, lines)
        assert "Traceback" not in done.stderr and done.stdout == ""
    unsafe = _cli(server.url("/evil.tar.gz"), "--extract", "--cache-dir", str(box.cache))
    assert "--unsafe skip" in unsafe.stderr and "unsafe='skip'" not in unsafe.stderr
    assert not (box.cache / "evil.txt").exists() and not (box.root / "evil.txt").exists()
