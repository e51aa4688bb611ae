"""What a download guarantees against misbehaving 127.0.0.1 servers and hostile arguments:
names stay in the cache, credentials stay with their origin, resumes never glue two
versions, a stalling link keeps its progress, a read-only cache is served, servers that
ask to wait are honoured, and messages tell the truth."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
import warnings
from email.utils import formatdate
from pathlib import Path

import pytest
from _kio_helpers import (
    BAD_RANGE,
    DROP,
    FaultServer,
    FetchingDataset,
    Sandbox,
    busy,
    make_tar,
    payload,
    sha256,
)

import kio
from kio import DownloadError, OfflineError, get_file

FAST = {"backoff": 0.01, "timeout": 2.0}


def datasets(box: Sandbox) -> Path:
    return box.cache / "datasets"


def state(box: Sandbox, name: str) -> Path:
    return datasets(box) / ".kio" / name


# -- names that would leave the cache, or that kio cannot store ----------------------------
@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"fname": "../x.bin"}, "fname"),
        ({"fname": "a/../../x.bin"}, "fname"),
        ({"fname": "/abs/x.bin"}, "fname"),
        ({"fname": "~/x.bin"}, "fname"),
        ({"cache_subdir": "../up"}, "cache_subdir"),
        ({"cache_subdir": "a/../../up"}, "cache_subdir"),
        ({"cache_subdir": "/abs"}, "cache_subdir"),
        ({"cache_subdir": "~"}, "cache_subdir"),
    ],
)
def test_names_that_would_leave_the_cache_are_refused(
    server: FaultServer, box: Sandbox, kwargs: dict[str, str], argument: str
) -> None:
    url = server.add("/x.bin", b"x")
    kwargs.setdefault("fname", "x.bin")
    with pytest.raises(ValueError, match=rf"^{argument} must .*inside|^{argument} must be a path"):
        get_file(origin=url, cache_dir=box.cache, **kwargs)  # type: ignore[arg-type]
    assert server.hits("/x.bin") == []
    assert not box.cache.exists() or not any(box.cache.rglob("x.bin"))


@pytest.mark.parametrize(
    "fname, words",
    [
        (".kio", "reserved"),
        ("sub/.kio/x.bin", "reserved"),
        (".kio-extract-x.bin", "reserved"),
        ("x.bin/", "trailing"),
        ("sub/", "trailing"),
        (".", "must name a file"),
        ("n" * 241, "too long"),
    ],
)
def test_names_kio_cannot_store_are_refused(
    server: FaultServer, box: Sandbox, fname: str, words: str
) -> None:
    url = server.add("/x.bin", b"x")
    with pytest.raises(ValueError, match=words) as info:
        get_file(fname, url, cache_dir=box.cache)
    assert str(info.value).startswith("fname ")
    assert server.hits("/x.bin") == []


def test_longest_storable_name_works_and_state_names_are_refused_everywhere(
    server: FaultServer, box: Sandbox
) -> None:
    url = server.add("/x.bin", b"x")
    longest = "n" * 240  # 255 bytes less the 15 that ".extracted.json" needs
    assert Path(get_file(longest, url, cache_dir=box.cache)).read_bytes() == b"x"
    box.known[longest].append(b"x")
    with pytest.raises(ValueError, match="too long"):
        get_file("n" * 230 + ".tar", url, extract=True, cache_dir=box.cache)  # needs more room
    deep = "/".join(["d" * 200] * 21)  # each part fits, the whole path does not
    with pytest.raises(ValueError, match="paths of"):
        get_file(deep + "/x.bin", url, cache_dir=box.cache)
    with pytest.raises(ValueError, match=r"cache_subdir must not use the name '\.kio'"):
        get_file("x.bin", url, cache_subdir="data/.kio", cache_dir=box.cache)
    with pytest.raises(ValueError, match="fname"):
        get_file(origin=server.url("/dir/.kio"), cache_dir=box.cache)  # name taken from URL
    assert len(server.hits("/x.bin")) == 1


# -- credentials and the user's headers stay with their origin ----------------------------
def test_redirect_to_another_origin_drops_credentials_and_user_headers(
    server: FaultServer, box: Sandbox
) -> None:
    import requests

    other = FaultServer()  # same host, another port: another origin
    box.servers.append(other)
    data = payload(5000, seed=60)
    target = other.add("/file.bin", data)
    server.redirect("/moved.bin", target)
    same = server.add("/here.bin", data)
    server.redirect("/alias.bin", "/here.bin")
    secret = {
        "Authorization": "Bearer secret",
        "Cookie": "session=secret",
        "Proxy-Authorization": "Basic secret",
        "X-Api-Key": "secret",
    }
    with requests.Session() as session:
        session.headers["X-Session-Token"] = "secret"
        session.auth = ("user", "secret")
        path = get_file(
            "moved.bin",
            server.url("/moved.bin"),
            file_hash=sha256(data),
            cache_dir=box.cache,
            headers=secret,
            session=session,
        )
        assert Path(path).read_bytes() == data
        (first,) = server.hits("/moved.bin")
        assert first.headers["X-Api-Key"] == "secret" and first.headers["Cookie"]
        (moved,) = other.hits("/file.bin")
        sent = {name.lower() for name in moved.headers}
        for name in (*secret, "X-Session-Token"):
            assert name.lower() not in sent, name
        assert "secret" not in json.dumps(moved.headers)
        assert moved.headers["User-Agent"].startswith(f"kio/{kio.__version__}")
        # A redirect within the origin keeps them (the user named that server).
        get_file("alias.bin", server.url("/alias.bin"), cache_dir=box.cache, headers=secret)
    (kept,) = server.hits("/here.bin")
    assert kept.headers["X-Api-Key"] == "secret" and kept.headers["Authorization"]
    assert same.endswith("/here.bin")
    box.known["alias.bin"].append(data)


# -- resume only with a strong validator; the hash is the final judge -----------------------
@pytest.mark.parametrize("with_hash", [False, True])
def test_changed_file_without_etag_is_never_glued(
    server: FaultServer, box: Sandbox, with_hash: bool
) -> None:
    old = payload(300_000, seed=61)
    new = payload(300_000, seed=62)
    # No ETag, and a Last-Modified that the Date header cannot prove strong (same second).
    url = server.add("/v.bin", old, etag=False)
    server.fault("/v.bin", DROP)
    with pytest.raises(DownloadError):
        get_file("v.bin", url, cache_dir=box.cache, retries=0, **FAST)
    server.add("/v.bin", new, etag=False, modified=server.app.files["/v.bin"].modified)
    path = get_file(
        "v.bin",
        url,
        file_hash=sha256(new) if with_hash else None,
        cache_dir=box.cache,
        **FAST,
    )
    assert Path(path).read_bytes() == new
    last = server.hits("/v.bin")[-1]
    assert "Range" not in last.headers and last.status == 200


def test_weak_etag_is_not_a_validator(server: FaultServer, box: Sandbox) -> None:
    data = payload(300_000, seed=77)
    url = server.add("/weak.bin", data, modified=formatdate(time.time() - 3600, usegmt=True))
    server.app.files["/weak.bin"].etag = 'W/"v1"'  # with an ETag, no date may be used either
    server.fault("/weak.bin", DROP)
    path = get_file("weak.bin", url, file_hash=sha256(data), cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    _, second = server.hits("/weak.bin")
    assert "Range" not in second.headers and "If-Range" not in second.headers
    assert second.status == 200


def test_old_enough_last_modified_is_a_strong_validator(server: FaultServer, box: Sandbox) -> None:
    data = payload(300_000, seed=63)
    stamp = formatdate(time.time() - 3600, usegmt=True)
    url = server.add("/lm.bin", data, etag=False, modified=stamp)
    server.fault("/lm.bin", DROP)
    path = get_file("lm.bin", url, file_hash=sha256(data), cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    _, second = server.hits("/lm.bin")
    assert second.headers["If-Range"] == stamp and second.status == 206


def test_resumed_bytes_that_fail_the_hash_are_fetched_whole_again(
    server: FaultServer, box: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    old = payload(300_000, seed=64)
    new = payload(300_000, seed=65)
    url = server.add("/liar.bin", old)
    server.fault("/liar.bin", DROP)
    with pytest.raises(DownloadError):
        get_file("liar.bin", url, cache_dir=box.cache, retries=0, **FAST)
    etag = server.app.files["/liar.bin"].etag
    server.add("/liar.bin", new)
    server.app.files["/liar.bin"].etag = etag  # a server that keeps its ETag: it lies
    with caplog.at_level(logging.INFO, logger="kio"):
        path = get_file("liar.bin", url, file_hash=sha256(new), cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == new
    statuses = [(h.status, "Range" in h.headers) for h in server.hits("/liar.bin")]
    assert statuses[-2:] == [(206, True), (200, False)]
    assert "fetching it whole again" in caplog.text


def test_partial_file_not_described_by_its_record_is_not_resumed(
    server: FaultServer, box: Sandbox
) -> None:
    data = payload(300_000, seed=66)
    url = server.add("/id.bin", data)
    server.fault("/id.bin", DROP)
    with pytest.raises(DownloadError):
        get_file("id.bin", url, cache_dir=box.cache, retries=0, **FAST)
    part = state(box, "id.bin.part")
    record = json.loads(state(box, "id.bin.part.json").read_text())
    assert record["etag"] and record["part"]["inode"] == part.stat().st_ino
    # Another file of the same size at the partial file's place (what a crash between
    # writing a record and replacing the bytes could leave): the record does not match it.
    replacement = part.with_name("other")
    replacement.write_bytes(payload(len(data) // 2, seed=67))
    os.replace(replacement, part)
    path = get_file("id.bin", url, cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    assert "Range" not in server.hits("/id.bin")[-1].headers


def test_resume_answers_that_disagree_are_named(server: FaultServer, box: Sandbox) -> None:
    data = payload(200_000, seed=68)
    url = server.add("/bad.bin", data)
    server.fault("/bad.bin", *([DROP, BAD_RANGE] * 4))
    with pytest.raises(DownloadError) as info:
        get_file("bad.bin", url, cache_dir=box.cache, retries=5, **FAST)
    message = str(info.value)
    assert "206" in message and "Content-Range 'bytes 0-" in message
    assert f"bytes={len(data) // 2}-" in message
    assert "HTTP status 206" in message and "HTTP status 200" not in message
    assert info.value.status == 206


# -- a stalling link keeps its progress, whatever the display -------------------------------
def test_stalling_link_keeps_every_byte_received(server: FaultServer, box: Sandbox) -> None:
    data = payload(1 << 20, seed=69)
    server.app.stall_seconds = 1.5
    url = server.add("/stall.bin", data, stall_after=256 << 10, piece=16 << 10)
    with pytest.raises(DownloadError, match=r"after 262144 bytes"):
        get_file("stall.bin", url, cache_dir=box.cache, retries=0, progress=False, timeout=0.5)
    assert state(box, "stall.bin.part").stat().st_size == 256 << 10
    # Each attempt ends in a timeout but adds 256 KiB: a new streak, so one retry is enough.
    path = get_file(
        "stall.bin",
        url,
        file_hash=sha256(data),
        cache_dir=box.cache,
        retries=1,
        backoff=0.01,
        progress=False,
        timeout=0.5,
    )
    assert Path(path).read_bytes() == data
    assert [h.status for h in server.hits("/stall.bin")] == [200, 206, 206, 206]


def test_slow_but_alive_server_succeeds_and_bytes_land_as_they_arrive(
    server: FaultServer, box: Sandbox
) -> None:
    data = payload(3 << 19, seed=70)  # 1.5 MiB: more than one 1 MiB read
    # 16 KiB every 20 ms: a whole 1 MiB chunk takes longer than the timeout, a piece not.
    url = server.add("/slow.bin", data, piece=16 << 10, chunk_delay=0.02)
    part = state(box, "slow.bin.part")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if part.exists():
                seen.append(part.stat().st_size)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        path = get_file("slow.bin", url, cache_dir=box.cache, progress=False, timeout=1.0)
    finally:
        stop.set()
        watcher.join()
    assert Path(path).read_bytes() == data
    assert len(server.hits("/slow.bin")) == 1
    partial_sizes = {size for size in seen if 0 < size < (1 << 20)}
    assert len(partial_sizes) >= 3, seen  # bytes written as they arrived


# -- a read-only cache still serves its valid files ----------------------------------------
def test_cache_where_no_lock_can_be_taken_serves_valid_files(
    server: FaultServer, box: Sandbox
) -> None:
    data = payload(10_000, seed=71)
    url = server.add("/ro.bin", data)
    path = get_file("ro.bin", url, cache_dir=box.cache)
    lock = state(box, "ro.bin.lock")
    if lock.exists():
        lock.unlink()
    lock.mkdir()  # the lock file cannot be created: as on a read-only mount
    assert get_file("ro.bin", url, file_hash=sha256(data), cache_dir=box.cache) == path
    assert get_file("ro.bin", url, file_hash=sha256(data), cache_dir=box.cache, offline=True)
    with pytest.raises(PermissionError, match="force_download=True needs a cache folder"):
        get_file("ro.bin", url, cache_dir=box.cache, force_download=True)
    assert len(server.hits("/ro.bin")) == 1
    Path(path).write_bytes(b"damaged")
    box.known["ro.bin"].append(b"damaged")
    with pytest.raises(PermissionError, match="not the expected") as info:
        get_file("ro.bin", url, file_hash=sha256(data), cache_dir=box.cache)
    assert "ro.bin.lock" in str(info.value)
    state(box, "absent.bin.lock").mkdir()
    with pytest.raises(PermissionError, match="no copy is cached"):
        get_file("absent.bin", server.url("/absent.bin"), cache_dir=box.cache)
    assert server.hits("/absent.bin") == []


_READ_ONLY_CHILD = r"""
import json, sys, kio
cache, url, digest = sys.argv[1:4]
out = {}
for offline in (True, False):
    out[str(offline)] = kio.get_file("ro.bin", url, file_hash=digest, cache_dir=cache,
                                     offline=offline)
try:
    kio.get_file("new.bin", url, cache_dir=cache)
except PermissionError as exc:
    out["missing"] = str(exc)
print(json.dumps(out))
"""


@pytest.mark.parametrize("keep_state", [False, True])
def test_read_only_mount_serves_valid_files(
    server: FaultServer, box: Sandbox, keep_state: bool
) -> None:
    """A real read-only bind mount (in a user and mount namespace, so that root cannot
    write either); skipped where the system does not allow unshare."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("unshare/mount not available")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces not allowed here: {probe.stderr!r}")
    data = payload(20_000, seed=72)
    url = server.add("/ro.bin", data)
    path = get_file("ro.bin", url, file_hash=sha256(data), cache_dir=box.cache)
    if keep_state:  # kio's folder is there (the lock file too, maybe), the memo is not
        state(box, "ro.bin.json").unlink()
        kept = sorted(os.listdir(datasets(box) / ".kio"))
    else:  # no memo, no lock: as a copied dataset mount
        shutil.rmtree(datasets(box) / ".kio")
    script = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && '
        'touch "$1/datasets/probe" 2>/dev/null && echo WRITABLE && exit 3; '
        'exec "$2" -c "$3" "$1" "$4" "$5"'
    )
    done = subprocess.run(
        [
            *("unshare", "-rm", "sh", "-c", script, "sh", str(box.cache), sys.executable),
            *(_READ_ONLY_CHILD, url, sha256(data)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"bind mounts not allowed here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["True"] == out["False"] == path
    assert "new.bin" in out["missing"] and "Read-only" in out["missing"]
    # Nothing was written.
    assert sorted(os.listdir(datasets(box))) == ([".kio", "ro.bin"] if keep_state else ["ro.bin"])
    if keep_state:
        assert sorted(os.listdir(datasets(box) / ".kio")) == kept
    assert len(server.hits("/ro.bin")) == 1


# -- untar=True with a name that already has the archive suffix -----------------------------
def test_untar_with_an_archive_name_stores_it_once_and_returns_what_exists(
    server: FaultServer, box: Sandbox
) -> None:
    archive = make_tar(str(box.src / "x.tar.gz"), [("x/readme.txt", b"hi")])
    data = Path(archive).read_bytes()
    box.known["x.tar.gz"].append(data)
    url = server.add("/x.tar.gz", data)
    with pytest.warns(DeprecationWarning, match="untar"):
        folder = get_file("x.tar.gz", url, untar=True, cache_dir=box.cache)
    assert folder == str(datasets(box) / "x")
    assert Path(folder, "readme.txt").read_bytes() == b"hi"
    assert (datasets(box) / "x.tar.gz").is_file()
    assert not (datasets(box) / "x.tar.gz.tar.gz").exists()
    # An archive without the top-level folder: the folder that exists is returned.
    other = make_tar(str(box.src / "flat.tgz"), [("a.txt", b"a"), ("b.txt", b"b")])
    flat = Path(other).read_bytes()
    box.known["flat.tgz"].append(flat)
    url = server.add("/flat.tgz", flat)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returned = get_file("flat.tgz", url, untar=True, cache_dir=box.cache)
    assert os.path.isdir(returned) and Path(returned, "a.txt").read_bytes() == b"a"
    assert returned == str(datasets(box))
    notes = [w for w in caught if "no top-level folder" in str(w.message)]
    assert notes and notes[0].filename == __file__


# -- servers that ask to wait, and the User-Agent -----------------------------------------
def test_429_and_503_honour_retry_after(
    server: FaultServer, box: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    data = payload(5000, seed=73)
    url = server.add("/busy.bin", data)
    until = int(time.time()) + 3  # an HTTP-date has whole seconds
    when = formatdate(until, usegmt=True)
    server.fault("/busy.bin", busy(429, "1"), busy(503, when))
    start = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="kio"):
        path = get_file("busy.bin", url, cache_dir=box.cache, retries=3, backoff=0.01)
    elapsed = time.perf_counter() - start
    assert Path(path).read_bytes() == data
    assert [h.status for h in server.hits("/busy.bin")] == [429, 503, 200]
    assert elapsed >= 1.0 and time.time() >= until - 0.05  # 1 s, then until the date
    waits = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(waits) == 2 and "in 1.0 s" in waits[0] and "HTTP 429" in waits[0]


def test_retry_after_beyond_the_bound_gives_up_at_once(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/later.bin", b"later")
    server.fault("/later.bin", busy(503, "3600"))
    start = time.perf_counter()
    with pytest.raises(DownloadError, match="Retry-After") as info:
        get_file("later.bin", url, cache_dir=box.cache, max_retry_after=5)
    assert time.perf_counter() - start < 2
    assert "max_retry_after=5" in str(info.value) and info.value.status == 503
    server.fault("/later.bin", busy(429))  # no Retry-After: plain backoff
    assert get_file("later.bin", url, cache_dir=box.cache, backoff=0.01)


def test_user_agent_names_kio_and_its_version(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/ua.bin", b"ua")
    get_file("ua.bin", url, cache_dir=box.cache)
    agent = server.hits("/ua.bin")[0].headers["User-Agent"]
    assert agent.startswith(f"kio/{kio.__version__} ")
    get_file("ua2.bin", url, cache_dir=box.cache, headers={"User-Agent": "mine/1"})
    assert server.hits("/ua.bin")[-1].headers["User-Agent"] == "mine/1"  # the user's wins
    box.known["ua2.bin"].append(b"ua")


# -- logging and warnings ------------------------------------------------------------------
def test_download_start_retries_and_resumes_are_logged(
    server: FaultServer, box: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    data = payload(200_000, seed=74)
    url = server.add("/log.bin", data)
    server.fault("/log.bin", DROP)
    with caplog.at_level(logging.INFO, logger="kio"):
        get_file("log.bin", url, cache_dir=box.cache, **FAST)
    messages = [r.getMessage() for r in caplog.records if r.name == "kio"]
    assert f"Downloading data from {url}" in messages
    assert any(m.startswith(f"retrying {url} in ") for m in messages)
    assert f"resuming {url} at byte {len(data) // 2} of {len(data)}" in messages
    assert not logging.getLogger("kio").handlers  # a library adds no handler


def test_warnings_point_at_the_callers_line(server: FaultServer, box: Sandbox) -> None:
    data = payload(3000, seed=75)
    url = server.add("/w.bin", data)
    datasets(box).mkdir(parents=True)
    (datasets(box) / "w.bin").write_bytes(b"stale")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_file("w.bin", url, file_hash=sha256(data), cache_dir=box.cache)
        get_file("w.bin", url, md5_hash=kio.hash_file(datasets(box) / "w.bin", "md5"))
    assert [w.filename for w in caught] == [__file__, __file__]
    assert "downloading it again" in str(caught[0].message)
    box.home_may_hold.add(".keras")
    box.known["w.bin"].append(b"stale")


# -- messages that tell the truth ----------------------------------------------------------
def test_file_origin_that_is_a_folder_or_a_fifo(box: Sandbox) -> None:
    folder = box.src / "folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        get_file("f.bin", folder.as_uri(), cache_dir=box.cache)
    fifo = box.src / "pipe"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="FIFO"):
        get_file("p.bin", fifo.as_uri(), cache_dir=box.cache)
    assert time.perf_counter() - start < 5  # refused, never opened (it would block)
    assert not (datasets(box) / "f.bin").exists() and not (datasets(box) / "p.bin").exists()


def test_docstring_examples_leave_no_environment_behind() -> None:
    import doctest

    import kio._cache
    import kio._get_file
    import kio._hashing

    before = dict(os.environ)
    for module in (kio, kio._cache, kio._get_file, kio._hashing, kio._errors):
        result = doctest.testmod(module, verbose=False)
        assert result.failed == 0, module.__name__
    assert dict(os.environ) == before


def test_numeric_arguments_accept_numpy_integers(server: FaultServer, box: Sandbox) -> None:
    np = pytest.importorskip("numpy")
    url = server.add("/np.bin", b"numpy")
    path = get_file(
        "np.bin",
        url,
        cache_dir=box.cache,
        retries=np.int64(2),
        timeout=np.float32(5),
        backoff=np.int32(0),
        lock_timeout=np.int16(3),
    )
    assert kio.hash_file(path, "md5", chunk_size=np.int64(3)) == kio.hash_file(path, "md5")
    with pytest.raises(TypeError, match="retries"):
        get_file("np.bin", url, cache_dir=box.cache, retries=np.float64(2))


# -- errors: rebuilt from one message, pickled, carried back from DataLoader workers --------
@pytest.mark.parametrize("cls", [DownloadError, OfflineError])
def test_errors_rebuild_from_one_message_and_pickle(cls: type[DownloadError]) -> None:
    plain = cls("only a message")
    assert str(plain) == "only a message" and plain.url is None
    if cls is OfflineError:
        full: DownloadError = OfflineError("offline", url="http://h/x", path="/c/x")
    else:
        full = DownloadError("failed", url="http://h/x", status=503, attempts=4)
    copy = pickle.loads(pickle.dumps(full))
    assert type(copy) is cls and copy.__dict__ == full.__dict__ and str(copy) == str(full)


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_errors_keep_their_type_through_a_dataloader_worker(
    server: FaultServer, box: Sandbox, context: str
) -> None:
    torch = pytest.importorskip("torch")
    missing = server.url("/absent.bin")
    for offline, expected in ((False, DownloadError), (True, OfflineError)):
        loader = torch.utils.data.DataLoader(
            FetchingDataset("absent.bin", missing, str(box.cache), offline),
            batch_size=None,
            num_workers=1,
            multiprocessing_context=context,
        )
        with pytest.raises(expected, match=r"absent\.bin") as info:
            next(iter(loader))
        assert type(info.value) is expected


def test_read_only_folder_by_permissions_serves_valid_files(
    server: FaultServer, box: Sandbox
) -> None:
    """The plain chmod case (root ignores permissions: there, the bind-mount test and the
    lock-path test above cover it)."""
    if os.geteuid() == 0:
        pytest.skip("root writes through chmod 0o555; covered by the read-only mount test")
    data = payload(10_000, seed=76)
    url = server.add("/perm.bin", data)
    path = get_file("perm.bin", url, cache_dir=box.cache)
    shutil.rmtree(datasets(box) / ".kio")
    datasets(box).chmod(0o555)
    try:
        for offline in (True, False):
            assert (
                get_file(
                    "perm.bin", url, file_hash=sha256(data), cache_dir=box.cache, offline=offline
                )
                == path
            )
        with pytest.raises(PermissionError, match="no copy is cached"):
            get_file("other.bin", url, cache_dir=box.cache)
    finally:
        datasets(box).chmod(0o755)
    assert len(server.hits("/perm.bin")) == 1
