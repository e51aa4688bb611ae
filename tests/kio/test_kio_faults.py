"""Downloads against a real server that misbehaves: drops, 5xx, stalls, bad lengths, 404,
with and without Range support; retries, resume, clean restarts, final errors."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from _kio_helpers import (
    BAD_LENGTH,
    DROP,
    ERROR_500,
    IGNORE_RANGE,
    NOT_FOUND,
    STALL,
    FaultServer,
    Sandbox,
    payload,
    sha256,
)

import kio
from kio import DownloadError, get_file

FAST = {"backoff": 0.01, "timeout": 2.0}


def final(box: Sandbox, name: str) -> str:
    return os.path.join(str(box.cache), "datasets", name)


def part(box: Sandbox, name: str) -> str:
    return os.path.join(str(box.cache), "datasets", ".kio", name + ".part")


def test_drop_mid_body_resumes_with_range(server: FaultServer, box: Sandbox) -> None:
    data = payload(400_000, seed=10)
    url = server.add("/r.bin", data)
    server.fault("/r.bin", DROP)
    path = get_file("r.bin", url, file_hash=sha256(data), cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    first, second = server.hits("/r.bin")
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={len(data) // 2}-"
    assert second.headers["If-Range"].startswith('"')
    assert second.status == 206
    assert first.body_bytes + second.body_bytes == len(data)  # nothing fetched twice
    assert not os.path.exists(part(box, "r.bin"))


def test_drop_without_range_support_restarts_cleanly(server: FaultServer, box: Sandbox) -> None:
    data = payload(300_000, seed=11)
    url = server.add("/nr.bin", data, range_ok=False)
    server.fault("/nr.bin", DROP)
    path = get_file("nr.bin", url, file_hash=sha256(data), cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    hits = server.hits("/nr.bin")
    assert [h.status for h in hits] == [200, 200]
    assert "Range" in hits[1].headers  # asked, got the whole file, started over


def test_server_ignoring_range_gets_a_clean_restart(server: FaultServer, box: Sandbox) -> None:
    data = payload(200_000, seed=12)
    url = server.add("/ig.bin", data)
    server.fault("/ig.bin", DROP, IGNORE_RANGE)
    path = get_file("ig.bin", url, cache_dir=box.cache, **FAST)  # no hash: size must be right
    assert Path(path).read_bytes() == data
    assert [h.status for h in server.hits("/ig.bin")] == [200, 200]


def test_500_then_200(server: FaultServer, box: Sandbox) -> None:
    data = payload(5000, seed=13)
    url = server.add("/e.bin", data)
    server.fault("/e.bin", ERROR_500, ERROR_500)
    path = get_file("e.bin", url, cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    assert [h.status for h in server.hits("/e.bin")] == [500, 500, 200]


def test_persistent_500_gives_up_naming_url_and_status(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/down.bin", b"never")
    server.fault("/down.bin", *[ERROR_500] * 10)
    with pytest.raises(DownloadError) as info:
        get_file("down.bin", url, cache_dir=box.cache, retries=2, **FAST)
    assert info.value.status == 500 and info.value.url == url and info.value.attempts == 3
    assert url in str(info.value) and "500" in str(info.value)
    assert isinstance(info.value, OSError)
    assert len(server.hits("/down.bin")) == 3
    assert not os.path.exists(final(box, "down.bin"))


def test_404_is_not_retried(server: FaultServer, box: Sandbox) -> None:
    url = server.url("/missing.bin")
    start = time.perf_counter()
    with pytest.raises(DownloadError, match="404") as info:
        get_file("missing.bin", url, cache_dir=box.cache, retries=5, backoff=1.0)
    assert time.perf_counter() - start < 1.0
    assert info.value.status == 404 and url in str(info.value)
    assert len(server.hits("/missing.bin")) == 1
    assert not os.path.exists(final(box, "missing.bin"))


def test_404_after_partial_discards_it(server: FaultServer, box: Sandbox) -> None:
    data = payload(100_000, seed=14)
    url = server.add("/gone.bin", data)
    server.fault("/gone.bin", DROP, NOT_FOUND)
    with pytest.raises(DownloadError, match="404"):
        get_file("gone.bin", url, cache_dir=box.cache, **FAST)
    assert not os.path.exists(part(box, "gone.bin"))
    assert not os.path.exists(final(box, "gone.bin"))


def test_stall_past_timeout_is_retried(server: FaultServer, box: Sandbox) -> None:
    data = payload(50_000, seed=15)
    url = server.add("/s.bin", data)
    server.app.stall_seconds = 1.5
    server.fault("/s.bin", STALL)
    start = time.perf_counter()
    path = get_file("s.bin", url, cache_dir=box.cache, timeout=0.3, backoff=0.01)
    assert time.perf_counter() - start < 1.4  # gave up on the stalled response early
    assert Path(path).read_bytes() == data
    assert len(server.hits("/s.bin")) == 2


def test_stall_every_time_fails(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/ss.bin", payload(1000))
    server.app.stall_seconds = 0.6
    server.fault("/ss.bin", STALL, STALL)
    with pytest.raises(DownloadError) as info:
        get_file("ss.bin", url, cache_dir=box.cache, timeout=0.2, retries=1, backoff=0.01)
    assert url in str(info.value) and "200" in str(info.value)
    assert info.value.attempts == 2
    assert not os.path.exists(final(box, "ss.bin"))


def test_wrong_content_length_then_right(server: FaultServer, box: Sandbox) -> None:
    data = payload(80_000, seed=16)
    url = server.add("/cl.bin", data)
    server.fault("/cl.bin", BAD_LENGTH)
    path = get_file("cl.bin", url, cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    # The body was complete but the length promised more: the resume request is refused
    # (416) and the file is fetched again from the start.
    assert [h.status for h in server.hits("/cl.bin")] == [200, 416, 200]


def test_wrong_content_length_always_leaves_no_final_file(
    server: FaultServer, box: Sandbox
) -> None:
    data = payload(20_000, seed=17)
    url = server.add("/bad.bin", data, range_ok=False)
    server.fault("/bad.bin", *[BAD_LENGTH] * 10)
    with pytest.raises(DownloadError, match=r"bad\.bin"):
        get_file("bad.bin", url, cache_dir=box.cache, retries=2, **FAST)
    assert not os.path.exists(final(box, "bad.bin"))


def test_interrupted_call_is_resumed_by_the_next(server: FaultServer, box: Sandbox) -> None:
    data = payload(300_000, seed=18)
    url = server.add("/later.bin", data)
    server.fault("/later.bin", DROP)
    with pytest.raises(DownloadError):
        get_file("later.bin", url, cache_dir=box.cache, retries=0, **FAST)
    assert not os.path.exists(final(box, "later.bin"))
    assert os.path.getsize(part(box, "later.bin")) == len(data) // 2
    path = get_file("later.bin", url, file_hash=sha256(data), cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    last = server.hits("/later.bin")[-1]
    assert last.status == 206 and last.body_bytes == len(data) - len(data) // 2


def test_changed_file_on_server_restarts_instead_of_gluing(
    server: FaultServer, box: Sandbox
) -> None:
    old = payload(300_000, seed=19)
    url = server.add("/v.bin", old)
    server.fault("/v.bin", DROP)
    with pytest.raises(DownloadError):
        get_file("v.bin", url, cache_dir=box.cache, retries=0, **FAST)
    new = payload(300_000, seed=20)
    server.add("/v.bin", new)  # new ETag: If-Range makes the server send it all
    path = get_file("v.bin", url, file_hash=sha256(new), cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == new
    assert server.hits("/v.bin")[-1].status == 200


def test_partial_longer_than_file_gets_416_then_restart(server: FaultServer, box: Sandbox) -> None:
    data = payload(1000, seed=21)
    url = server.add("/small.bin", data, range_ok=True)
    folder = box.cache / "datasets" / ".kio"
    folder.mkdir(parents=True)
    partial = folder / "small.bin.part"
    partial.write_bytes(payload(5000, seed=99))
    st = partial.stat()
    etag = server.app.files["/small.bin"].etag
    record = {"url": url, "etag": etag, "part": {"inode": st.st_ino, "device": st.st_dev}}
    (folder / "small.bin.part.json").write_text(json.dumps(record))
    path = get_file("small.bin", url, cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    assert [h.status for h in server.hits("/small.bin")] == [416, 200]
    # A partial file whose record does not describe it (no identity) is never resumed.
    partial.write_bytes(payload(500, seed=98))
    (folder / "small.bin.part.json").write_text(json.dumps({"url": url, "etag": etag}))
    get_file("small.bin", url, cache_dir=box.cache, force_download=True, **FAST)
    assert "Range" not in server.hits("/small.bin")[-1].headers
    assert Path(path).read_bytes() == data


def test_connection_refused(box: Sandbox) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(DownloadError) as info:
        get_file("x.bin", url, cache_dir=box.cache, retries=1, backoff=0.01, timeout=1.0)
    assert info.value.status is None and "no HTTP status" in str(info.value)
    assert url in str(info.value) and info.value.attempts == 2


def test_tls_error_is_not_retried(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/t.bin", b"t").replace("http://", "https://")
    with pytest.raises(DownloadError, match="SSL") as info:
        get_file("t.bin", url, cache_dir=box.cache, retries=3, backoff=1.0, timeout=2.0)
    assert info.value.attempts == 1


def test_proxies_from_environment_and_argument(
    server: FaultServer, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"through the proxy"
    server.add("/p.txt", data)
    proxy = f"http://127.0.0.1:{server.port}"
    path = get_file(
        "p.txt",
        "http://example.invalid/p.txt",
        cache_dir=box.cache,
        proxies={"http": proxy},
        **FAST,
    )
    assert Path(path).read_bytes() == data
    assert server.hits("/p.txt")[-1].path == "http://example.invalid/p.txt"  # proxy request form
    monkeypatch.setenv("HTTP_PROXY", proxy)
    path = get_file("p2.txt", "http://example.invalid/p.txt", cache_dir=box.cache, **FAST)
    assert Path(path).read_bytes() == data
    assert len(server.hits("/p.txt")) == 2
    box.known["p2.txt"].append(data)


def test_custom_session_and_headers(server: FaultServer, box: Sandbox) -> None:
    import requests

    url = server.add("/auth.bin", b"secret")
    with requests.Session() as session:
        session.headers["X-From-Session"] = "yes"
        get_file(
            "auth.bin",
            url,
            cache_dir=box.cache,
            session=session,
            headers={"Authorization": "Bearer t"},
        )
    sent = server.hits("/auth.bin")[0].headers
    assert sent["X-From-Session"] == "yes" and sent["Authorization"] == "Bearer t"
    assert sent["Accept-Encoding"] == "identity"
    assert kio.validate_file(
        os.path.join(str(box.cache), "datasets", "auth.bin"), sha256(b"secret")
    )


def test_500_then_404_counts_both_attempts(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/flip.bin", b"x")
    server.fault("/flip.bin", ERROR_500, NOT_FOUND)
    with pytest.raises(DownloadError) as info:
        get_file("flip.bin", url, cache_dir=box.cache, **FAST)
    assert info.value.status == 404 and info.value.attempts == 2
    assert "HTTP status 404; 2 attempts" in str(info.value)
