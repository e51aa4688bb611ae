"""Helpers for the kio tests: the sandbox every test runs in, a real HTTP server on
127.0.0.1 with injectable faults, archive builders, and worker functions importable by
spawned processes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import socket
import tarfile
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = str(Path(__file__).parent)

# Fault names understood by the server, consumed one per request (see FaultServer.fault).
DROP = "drop"  # send headers and half the body, then close the connection
ERROR_500 = "500"
NOT_FOUND = "404"
STALL = "stall"  # send headers, then stall longer than the client's timeout
BAD_LENGTH = "bad_length"  # announce more bytes than are sent, then close
IGNORE_RANGE = "ignore_range"  # answer a Range request with the whole file (200)
BAD_RANGE = "bad_range"  # answer a Range request with 206 and a Content-Range from byte 0


def busy(status: int, retry_after: str | None = None) -> str:
    """A fault: answer ``status`` (429 or 503) with an optional ``Retry-After`` value."""
    return f"busy|{status}|{retry_after or ''}"


@dataclass
class Served:
    data: bytes
    etag: str
    modified: str
    range_ok: bool = True
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks (a slow server)
    send_etag: bool = True
    send_modified: bool = True
    piece: int = 1 << 16  # bytes written at a time
    stall_after: int | None = None  # per response: stall (and close) after this many bytes


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int = 0
    body_bytes: int = 0
    # Set once the handler has returned: the client can hold the last byte before the
    # handler has counted it.
    answered: threading.Event = field(default_factory=threading.Event, repr=False)


@dataclass
class App:
    files: dict[str, Served] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    requests: list[Request] = field(default_factory=list)
    versions: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    stall_seconds: float = 2.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        app = self.server.app
        # A proxy receives the absolute URL; serve it by its path all the same.
        path = urllib.parse.urlsplit(self.path).path
        record = Request(self.path, {k: v for k, v in self.headers.items()})
        with app.lock:
            app.requests.append(record)
            fault = app.faults[path].pop(0) if app.faults.get(path) else None
            served = app.files.get(path)
            redirect = app.redirects.get(path)
        try:
            if redirect is not None and fault is None:
                self._redirect(record, *redirect)
                return
            self._answer(app, record, served, fault)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        finally:
            record.answered.set()

    def _small(self, record: Request, status: int, text: str) -> None:
        body = text.encode()
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, record: Request, status: int, location: str) -> None:
        record.status = status
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, app: App, record: Request, served: Served | None, fault: str | None) -> None:
        if served is None or fault == NOT_FOUND:
            self._small(record, 404, "not found")
            return
        if fault == ERROR_500:
            self._small(record, 500, "boom")
            return
        if fault is not None and fault.startswith("busy|"):
            _, code, retry_after = fault.split("|", 2)
            body = b"busy"
            record.status = int(code)
            self.send_response(int(code))
            if retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data = served.data
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted and served.range_ok and fault != IGNORE_RANGE:
            if_range = self.headers.get("If-Range")
            valid = [served.etag] if served.send_etag else []
            valid += [served.modified] if served.send_modified else []
            if if_range is None or if_range in valid:
                match = re.fullmatch(r"bytes=(\d+)-", wanted.strip())
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self._small(record, 416, "range not satisfiable")
                        return
                    status = 206
        body = data[start:]
        record.status = status
        self.send_response(status)
        length = len(body) + (1000 if fault == BAD_LENGTH else 0)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        if served.send_etag:
            self.send_header("ETag", served.etag)
        if served.send_modified:
            self.send_header("Last-Modified", served.modified)
        if served.range_ok:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            first = 0 if fault == BAD_RANGE else start
            self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if fault == STALL:
            self.wfile.flush()
            time.sleep(app.stall_seconds)
            self.close_connection = True
            return
        if fault == DROP:
            body = body[: len(body) // 2]
        step = served.piece
        stalled = False
        for offset in range(0, len(body), step):
            if served.stall_after is not None and offset >= served.stall_after:
                self.wfile.flush()
                time.sleep(app.stall_seconds)
                stalled = True
                break
            self.wfile.write(body[offset : offset + step])
            self.wfile.flush()
            record.body_bytes += min(step, len(body) - offset)
            if served.chunk_delay:
                time.sleep(served.chunk_delay)
        if fault in (DROP, BAD_LENGTH) or stalled:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: App


class FaultServer:
    """A real HTTP/1.1 server on 127.0.0.1 (port 0) serving in-memory files, with faults."""

    def __init__(self) -> None:
        self.app = App()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.app = self.app
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(
        self,
        path: str,
        data: bytes,
        *,
        range_ok: bool = True,
        chunk_delay: float = 0.0,
        etag: bool = True,
        modified: str | bool = True,
        piece: int = 1 << 16,
        stall_after: int | None = None,
    ) -> str:
        """Serve ``data`` at ``path``; returns the URL.

        ``etag=False`` / ``modified=False`` leave those headers out; a str ``modified``
        is sent as the Last-Modified value (default: now). ``piece`` bytes are written at
        a time (``chunk_delay`` seconds apart); ``stall_after`` makes every response stall
        for ``app.stall_seconds`` after that many body bytes, then close.
        """
        tag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
        stamp = modified if isinstance(modified, str) else formatdate(time.time(), usegmt=True)
        served = Served(
            data,
            tag,
            stamp,
            range_ok,
            chunk_delay,
            send_etag=etag,
            send_modified=modified is not False,
            piece=piece,
            stall_after=stall_after,
        )
        with self.app.lock:
            self.app.files[path] = served
            self.app.versions[os.path.basename(path)].append(data)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer every request of ``path`` with a redirect to ``location``; returns the URL."""
        with self.app.lock:
            self.app.redirects[path] = (status, location)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fault(self, path: str, *faults: str) -> None:
        """Queue faults for the next requests of ``path``, one per request."""
        with self.app.lock:
            self.app.faults[path].extend(faults)

    def hits(self, path: str) -> list[Request]:
        """The requests of ``path`` so far, each once its handler has finished answering."""
        with self.app.lock:
            found = [r for r in self.app.requests if urllib.parse.urlsplit(r.path).path == path]
        for record in found:
            record.answered.wait(timeout=self.app.stall_seconds + 10)
        return found

    def body_hits(self, path: str) -> int:
        """Responses of ``path`` that sent file bytes (200 or 206)."""
        return sum(1 for r in self.hits(path) if r.status in (200, 206) and r.body_bytes > 0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    """A tar archive of ``members`` ((name, data) pairs or prepared TarInfo objects)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_tar(
    path: str, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz"
) -> str:
    """Write `tar_bytes` of ``members`` to ``path``."""
    Path(path).write_bytes(tar_bytes(members, mode))
    return path


def tar_link(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def tar_device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


def walk_files(root: str) -> Iterator[str]:
    for folder, _, files in os.walk(root):
        for name in files:
            yield os.path.join(folder, name)


ENV_TO_CLEAR = (
    "KIO_HOME",
    "KERAS_HOME",
    "KIO_OFFLINE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


@dataclass
class Sandbox:
    root: Path
    cache: Path
    src: Path
    home: Path
    tmp: Path
    allowed: set[str] = field(default_factory=set)  # extra top-level names a test may write
    known: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    servers: list[FaultServer] = field(default_factory=list)
    home_may_hold: set[str] = field(default_factory=set)

    def source(self, name: str, data: bytes) -> Path:
        """A local input file (e.g. for file:// origins), remembered as a valid version."""
        path = self.src / name
        path.write_bytes(data)
        self.known[name].append(data)
        return path

    def versions(self, name: str) -> list[bytes]:
        found = list(self.known.get(name, []))
        for server in self.servers:
            found.extend(server.app.versions.get(name, []))
        return found


def check_sandbox(box: Sandbox) -> None:
    allowed = {"cache", "src", "home", "tmp", *box.allowed}
    extra = sorted(set(os.listdir(box.root)) - allowed)
    assert not extra, f"written outside the cache folder: {extra}"
    assert set(os.listdir(box.home)) <= box.home_may_hold, os.listdir(box.home)
    assert os.listdir(box.tmp) == [], f"left in TMPDIR: {os.listdir(box.tmp)}"
    roots = [box.cache] + [box.root / name for name in box.allowed]
    for root in roots:
        if not root.exists():
            continue
        for folder, dirs, files in os.walk(root):
            leftovers = [d for d in dirs if d.startswith(".kio-extract-")]
            assert not leftovers, f"extraction temporaries left: {leftovers} in {folder}"
            if os.path.basename(folder) == ".kio":
                continue
            for name in files:
                versions = box.versions(name)
                path = os.path.join(folder, name)
                if versions and not os.path.islink(path):
                    with open(path, "rb") as handle:
                        content = handle.read()
                    assert content in versions, f"incomplete or wrong file at final path {path}"


# -- worker run by spawned processes (must be importable by name) -------------------------
def fetch_at(url: str, cache_dir: str, file_hash: str, start_at: float) -> str:
    """Wait until ``start_at`` (so all workers start together), then call get_file."""
    import kio

    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    return kio.get_file("shared.bin", url, file_hash=file_hash, cache_dir=cache_dir, progress=False)


def fetch_plain(name: str, url: str, cache_dir: str, offline: bool) -> str:
    """get_file with no retries, for errors raised in a worker process."""
    import kio

    return kio.get_file(name, url, cache_dir=cache_dir, retries=0, offline=offline)


class FetchingDataset:
    """A map-style dataset whose item fetches a file with get_file (torch not imported
    here), so that kio's errors are raised inside a real DataLoader worker."""

    def __init__(self, name: str, url: str, cache_dir: str, offline: bool) -> None:
        self.name, self.url, self.cache_dir, self.offline = name, url, cache_dir, offline

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> str:
        return fetch_plain(self.name, self.url, self.cache_dir, self.offline)
