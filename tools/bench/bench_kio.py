"""Benchmarks of kio.get_file against what a user would otherwise run.

1. Download of a 256 MiB file from a loopback server (run in its own process, sending
   with sendfile) vs a plain ``requests`` stream written to disk. Goal: >= 0.9x.
2. Cache hit with ``file_hash`` on a 512 MiB file vs Keras 3's ``keras.utils.get_file``
   (which re-hashes the file on every call). Goal: >= 50x.
3. Extraction of a 10,000-member tar.gz (kio's safe extraction: the standard library's
   ``data`` filter underneath kio's stricter checks, temporary folder, audit, rename) vs
   ``tarfile.extractall(filter="data")``, the standard library's own safe extraction.
   Goal: within 1.3x. For context, also vs an unchecked ``extractall`` (no goal).

Run: ``KERAS_BACKEND=torch python tools/bench/bench_kio.py [--quick]`` (bench env).
All data is generated in a temporary folder.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import Comparison, compare, print_header

import kio

MiB = 1 << 20

_SERVER = r"""
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = sys.argv[1]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = os.path.join(ROOT, os.path.basename(self.path))
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.flush()
        with open(path, "rb") as handle:
            self.connection.sendfile(handle)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def loopback_server(root: str) -> Iterator[str]:
    """A file server in a separate process (so it does not share our GIL)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER, root], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def write_random(path: str, size: int) -> str:
    """Write ``size`` pseudo-random bytes; return their sha256."""
    digest = hashlib.sha256()
    block = os.urandom(4 * MiB)
    with open(path, "wb") as handle:
        written = 0
        for index in itertools.count():
            if written >= size:
                break
            chunk = block[: min(len(block), size - written)]
            chunk = index.to_bytes(8, "little") + chunk[8:]
            handle.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return digest.hexdigest()


def bench_download(work: str, quick: bool) -> list[Comparison]:
    import requests

    size = (64 if quick else 256) * MiB
    served = os.path.join(work, "served")
    os.makedirs(served)
    digest = write_random(os.path.join(served, "blob.bin"), size)
    results = []
    counter = itertools.count()
    previous: dict[str, str] = {}

    def fresh(kind: str) -> str:
        # Each call writes a new file and first deletes the one its side wrote last time,
        # so both sides pay the same file-system costs (nothing accumulates, nothing is
        # overwritten in place).
        old = previous.get(kind)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        folder = os.path.join(work, f"{kind}-{next(counter)}")
        previous[kind] = folder
        return folder

    with loopback_server(served) as base:
        url = f"{base}/blob.bin"

        def ours() -> None:
            kio.get_file("blob.bin", url, cache_dir=fresh("ours"), progress=False)

        def ours_verified() -> None:
            kio.get_file("blob.bin", url, file_hash=digest, cache_dir=fresh("ours"), progress=False)

        def plain_stream(hasher: hashlib._Hash | None) -> None:
            folder = fresh("plain")
            os.makedirs(folder)
            with (
                requests.get(url, stream=True, timeout=30) as response,
                open(os.path.join(folder, "blob.bin"), "wb") as out,
            ):
                response.raise_for_status()
                for chunk in response.iter_content(chunk_size=MiB):
                    out.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
            if hasher is not None and hasher.hexdigest() != digest:
                raise AssertionError("baseline download corrupted")

        def baseline() -> None:
            plain_stream(None)

        def baseline_verified() -> None:
            plain_stream(hashlib.sha256())

        ours()
        baseline()  # warm both paths
        repeat = 5 if quick else 7
        label = f"download {size // MiB} MiB over loopback"
        results.append(compare(label, ours, baseline, "requests stream", repeat=repeat, goal=0.9))
        results.append(
            compare(
                f"{label}, sha256 checked",
                ours_verified,
                baseline_verified,
                "requests stream + hashlib",
                repeat=repeat,
                goal=0.9,
            )
        )
    return results


def bench_cache_hit(work: str, quick: bool) -> list[Comparison]:
    size = (64 if quick else 512) * MiB
    cache = os.path.join(work, "hit-cache")
    folder = os.path.join(cache, "datasets")
    os.makedirs(folder)
    digest = write_random(os.path.join(folder, "big.bin"), size)
    url = "http://127.0.0.1:9/big.bin"  # never contacted: the file is cached
    try:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from keras.utils import get_file as keras_get_file
    except ImportError as exc:
        print(f"cache hit: keras not importable ({exc}); comparison skipped")
        return []

    def ours() -> None:
        kio.get_file("big.bin", url, file_hash=digest, cache_dir=cache)

    def baseline() -> None:
        keras_get_file("big.bin", url, file_hash=digest, cache_dir=cache)

    ours()  # first call verifies and remembers (as the first call after a download does)
    baseline()
    return [
        compare(
            f"cache hit with file_hash, {size // MiB} MiB file",
            ours,
            baseline,
            "keras.utils.get_file",
            repeat=5,
            goal=50.0,
        )
    ]


def make_tar_gz(path: str, members: int) -> None:
    with tarfile.open(path, "w:gz", compresslevel=6) as archive:
        for index in range(members):
            data = f"member {index}\n".encode() * (1 + index % 40)
            info = tarfile.TarInfo(f"set/d{index % 100:02d}/f{index:05d}.txt")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))


def bench_extract(work: str, quick: bool) -> list[Comparison]:
    members = 2_000 if quick else 10_000
    archive = os.path.join(work, "many.tar.gz")
    make_tar_gz(archive, members)
    outputs = os.path.join(work, "extracted")
    os.makedirs(outputs)
    counter = itertools.count()

    def fresh() -> str:
        return os.path.join(outputs, str(next(counter)))

    def ours() -> None:
        kio.extract_archive(archive, fresh())

    has_filters = hasattr(tarfile, "data_filter")

    def unchecked() -> None:
        with tarfile.open(archive) as tar:
            extra = {"filter": "fully_trusted"} if has_filters else {}
            tar.extractall(fresh(), **extra)  # type: ignore[arg-type]

    def data_filter() -> None:
        with tarfile.open(archive) as tar:
            tar.extractall(fresh(), filter="data")

    ours()
    unchecked()
    results = []
    if has_filters:
        # The safe baseline: the standard library's own "data" filter, which kio runs
        # underneath its stricter checks. Goal: kio's checks cost at most 30% on top.
        data_filter()
        results.append(
            compare(
                f"extract tar.gz with {members:,} members",
                ours,
                data_filter,
                "extractall(filter='data')",
                repeat=5 if quick else 7,
                goal=1 / 1.3,
            )
        )
    # Context, no goal: what checking every member costs against writing blindly
    # (Keras 2's extractall, the pre-3.12 default that CVE-2025-4517 abused).
    results.append(
        compare(
            f"context: extract tar.gz with {members:,} members, vs no checks at all",
            ours,
            unchecked,
            "extractall (unchecked)",
            repeat=5 if quick else 7,
        )
    )
    return results


def main(quick: bool = False) -> list[Comparison]:
    print_header("kio: get_file downloads, cache hits, extraction")
    results: list[Comparison] = []
    steps: list[Callable[[str, bool], list[Comparison]]] = [
        bench_download,
        bench_cache_hit,
        bench_extract,
    ]
    for step in steps:
        work = tempfile.mkdtemp(prefix="bench-kio-")
        try:
            started = time.perf_counter()
            results.extend(step(work, quick))
            print(f"  ({step.__name__}: {time.perf_counter() - started:.1f} s)", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
