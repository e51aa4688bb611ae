"""Hostile archives beyond the obvious, interruptions at each stage of get_file, the lock
between threads and its timeout, and arguments that would only fail late."""

from __future__ import annotations

import hashlib
import lzma
import os
import tarfile
import threading
import time
import zipfile
from contextlib import nullcontext
from pathlib import Path

import filelock
import pytest
from _kio_helpers import FaultServer, Sandbox, make_tar, payload, sha256, tar_bytes, tar_link

import kio
import kio._get_file as impl
import kregistry
from kio import UnsafeArchiveError, extract_archive, get_file


def _everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# Each of these is safe member by member at the moment it is checked, and escapes only
# through what a later member changes (or through tarfile's own fallbacks).
LATE_ESCAPES: dict[str, list[tarfile.TarInfo | tuple[str, bytes]]] = {
    # "a" -> "p/.." is inside while p does not exist; "p" -> "." then makes a = root/..
    "symlink_retargeted_later": [tar_link("a", "p/.."), tar_link("p", "."), ("a/evil", b"x")],
    "symlink_retargeted_no_write": [tar_link("a", "p/.."), tar_link("p", ".")],
    # A hard link to a dangling symlink: tarfile falls back to copying the symlink member
    # to the new place, where its relative target climbs out.
    "hardlink_to_dangling_symlink": [
        tar_link("a/b/s", "../../x"),
        tar_link("h", "a/b/s", hard=True),
        ("h/evil", b"x"),
    ],
}


@pytest.mark.parametrize("case", sorted(LATE_ESCAPES))
def test_escapes_made_by_later_members_are_refused(box: Sandbox, case: str) -> None:
    archive = box.source(f"{case}.tar", tar_bytes(LATE_ESCAPES[case], mode="w"))
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_archive(archive, out)
    assert _everything_under(out) == []
    assert _everything_under(box.cache) == ["out"]
    with pytest.warns(UserWarning, match="skipping unsafe member"):
        extract_archive(archive, out, unsafe="skip")
    for entry in out.rglob("*"):  # whatever was kept resolves inside
        assert str(entry.resolve()).startswith(str(out.resolve()))
    assert not (box.cache / "evil").exists() and not (box.root / "evil").exists()


def test_hard_link_to_an_internal_symlink_stays_inside(box: Sandbox) -> None:
    archive = box.source(
        "hl.tar",
        tar_bytes([("d/f", b"1"), tar_link("s", "d"), tar_link("h", "s", hard=True)], mode="w"),
    )
    out = box.cache / "out"
    assert extract_archive(archive, out)
    assert (out / "h" / "f").read_bytes() == b"1"
    assert (out / "h").resolve() == (out / "d").resolve()


@pytest.mark.parametrize(
    "name", ["..\\..\\evil.txt", "C:\\evil.txt", "C:evil.txt", "//server/share/evil.txt"]
)
def test_zip_backslashes_drive_letters_and_unc_are_refused(box: Sandbox, name: str) -> None:
    archive = box.src / "win.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", b"f")
        zf.writestr(name, b"evil")
    box.known["win.zip"].append(archive.read_bytes())
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, out)
    assert info.value.member == name
    assert _everything_under(out) == []


def test_duplicate_members_last_one_wins(box: Sandbox) -> None:
    archive = box.source(
        "dup.tar", tar_bytes([("x.txt", b"first"), ("x.txt", b"second")], mode="w")
    )
    out = box.cache / "out"
    assert extract_archive(archive, out)
    assert (out / "x.txt").read_bytes() == b"second"


def test_filesystem_errors_name_the_member_not_the_temporary(box: Sandbox) -> None:
    long_name = "n" * 300  # longer than any file system's 255-byte name limit
    archive = box.source("long.tar", tar_bytes([("ok.txt", b"ok"), (long_name, b"x")], mode="w"))
    out = box.cache / "out"
    with pytest.raises(OSError) as info:
        extract_archive(archive, out)
    message = str(info.value)
    assert long_name in message and "long.tar" in message
    assert ".kio-extract-" not in message
    assert _everything_under(out) == []


def test_corrupt_xz_is_a_damaged_archive(box: Sandbox) -> None:
    data = bytearray(tar_bytes([(f"f{i}", os.urandom(4000)) for i in range(20)], mode="w:xz"))
    data[len(data) // 2 : len(data) // 2 + 100] = bytes(100)
    archive = box.source("bad.tar.xz", bytes(data))
    with pytest.raises(ValueError, match="damaged") as info:
        extract_archive(archive, box.cache / "out")
    assert not isinstance(info.value, lzma.LZMAError)
    assert _everything_under(box.cache / "out") == []


def _checksum_offset(data: bytes, mode: str) -> int:
    """Where the compressed stream keeps the checksum of a one-block tar archive."""
    if mode == "w:gz":
        return len(data) - 8  # the trailer: CRC-32, then the length
    if mode == "w:bz2":
        return 4 + 6  # after "BZh9" and the block's magic: the block's CRC
    # xz: the block's CRC-64 ends where the index starts; the footer (12 bytes) holds
    # the index's size in 4-byte units, less one.
    index_size = (int.from_bytes(data[-8:-4], "little") + 1) * 4
    return len(data) - 12 - index_size - 8


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_a_wrong_stream_checksum_is_a_damaged_archive(box: Sandbox, mode: str) -> None:
    # Only the checksum is wrong, so every tar header and member reads well: it takes
    # decompressing past the tar's end marker to see the damage.
    data = bytearray(tar_bytes([(f"f{i}", os.urandom(4000)) for i in range(20)], mode=mode))
    data[_checksum_offset(data, mode)] ^= 0x01
    archive = box.source("bad." + mode[2:], bytes(data))
    with pytest.raises(ValueError, match="damaged or truncated"):
        extract_archive(archive, box.cache / "out")
    assert _everything_under(box.cache / "out") == []


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_a_stream_cut_after_the_tar_end_marker_is_a_truncated_archive(
    box: Sandbox, mode: str
) -> None:
    data = tar_bytes([("a.txt", b"alpha")], mode=mode)
    archive = box.source("cut." + mode[2:], data[:-4])  # the stream's last check is gone
    with pytest.raises(ValueError, match="damaged or truncated"):
        extract_archive(archive, box.cache / "out")
    assert _everything_under(box.cache / "out") == []


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
@pytest.mark.parametrize("trailer", [bytes(1024), b"signed-by: someone"])
def test_bytes_after_the_compressed_stream_are_ignored(
    box: Sandbox, mode: str, trailer: bytes
) -> None:
    # As gzip -d, bzip2 -d and xz -d do: padding or a signature appended to an archive.
    data = tar_bytes([("a.txt", b"alpha")], mode=mode) + trailer
    archive = box.source("padded." + mode[2:], data)
    assert extract_archive(archive, box.cache / "out")
    assert (box.cache / "out" / "a.txt").read_bytes() == b"alpha"


def test_archive_may_not_replace_the_state_folder(server: FaultServer, box: Sandbox) -> None:
    data = tar_bytes([(".kio/other.bin.json", b"{}"), ("real/a.txt", b"a")], mode="w:gz")
    url = server.add("/state.tar.gz", data)
    box.known["state.tar.gz"].append(data)
    path = get_file(
        "state.tar.gz",
        url,
        file_hash=sha256(data),
        extract=True,
        archive_format=None,
        cache_dir=box.cache,
    )
    state = box.cache / "datasets" / ".kio"
    before = sorted(os.listdir(state))
    assert "state.tar.gz.json" in before  # the verified-hash memo
    with pytest.raises(UnsafeArchiveError, match=r"\.kio"):
        get_file("state.tar.gz", url, file_hash=sha256(data), extract=True, cache_dir=box.cache)
    assert sorted(os.listdir(state)) == before
    assert not (box.cache / "datasets" / "real").exists()
    with pytest.warns(UserWarning, match=r"\.kio"):
        get_file(
            "state.tar.gz",
            url,
            file_hash=sha256(data),
            extract=True,
            unsafe="skip",
            cache_dir=box.cache,
        )
    assert (box.cache / "datasets" / "real" / "a.txt").read_bytes() == b"a"
    assert not (state / "other.bin.json").exists()
    assert Path(path).read_bytes() == data


# -- interrupted at each stage ---------------------------------------------------------
def test_interrupted_while_streaming_leaves_only_the_partial(
    server: FaultServer, box: Sandbox
) -> None:
    data = payload(3 << 20, seed=40)  # several of the 1 MiB chunks kio reads at a time
    url = server.add("/i.bin", data)

    class Interrupting:
        """sha256 that raises KeyboardInterrupt once 1.5 MiB have gone through it."""

        def __init__(self) -> None:
            self.inner = hashlib.sha256()
            self.seen = 0

        def update(self, chunk: bytes) -> None:
            self.seen += len(chunk)
            if self.seen > 3 << 19:
                raise KeyboardInterrupt
            self.inner.update(chunk)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    kregistry.register(name="interrupting", package="kio.hash")(Interrupting)
    with pytest.raises(KeyboardInterrupt):
        get_file(
            "i.bin",
            url,
            file_hash=sha256(data),
            hash_algorithm="interrupting",
            cache_dir=box.cache,
        )
    folder = box.cache / "datasets"
    assert not (folder / "i.bin").exists()
    kept = (folder / ".kio" / "i.bin.part").stat().st_size
    assert 0 < kept < len(data)
    assert (
        Path(get_file("i.bin", url, file_hash=sha256(data), cache_dir=box.cache)).read_bytes()
        == data
    )
    assert server.hits("/i.bin")[-1].headers["Range"] == f"bytes={kept}-"


def test_interrupted_between_verification_and_rename(
    server: FaultServer, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(50_000, seed=41)
    url = server.add("/v.bin", data)
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if str(src).endswith(".part"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        get_file("v.bin", url, file_hash=sha256(data), cache_dir=box.cache)
    monkeypatch.undo()
    assert not (box.cache / "datasets" / "v.bin").exists()
    assert get_file("v.bin", url, file_hash=sha256(data), cache_dir=box.cache)


def test_interrupted_after_rename_before_memo(
    server: FaultServer, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(50_000, seed=42)
    url = server.add("/m.bin", data)

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(impl, "_remember", interrupt)
    with pytest.raises(KeyboardInterrupt):
        get_file("m.bin", url, file_hash=sha256(data), cache_dir=box.cache)
    monkeypatch.undo()
    final = box.cache / "datasets" / "m.bin"
    assert final.read_bytes() == data  # complete and verified, only the memo is missing
    assert not (box.cache / "datasets" / ".kio" / "m.bin.json").exists()
    assert get_file("m.bin", url, file_hash=sha256(data), cache_dir=box.cache) == str(final)
    assert (box.cache / "datasets" / ".kio" / "m.bin.json").exists()  # re-verified once
    assert len(server.hits("/m.bin")) == 1


def test_interrupted_while_moving_entries_is_extracted_again(
    server: FaultServer, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_tar(str(box.src / "two.tar.gz"), [("a/x.txt", b"new a"), ("b/y.txt", b"new b")])
    data = Path(archive).read_bytes()
    url = server.add("/two.tar.gz", data)
    box.known["two.tar.gz"].append(data)
    folder = box.cache / "datasets"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "y.txt").write_bytes(b"old b")
    box.known["y.txt"].extend([b"old b", b"new b"])
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        # The new "b" moving in from the temporary folder: interrupted, after "a" went
        # into place and the old "b" was set aside (putting it back is not interrupted).
        if str(dst) == str(folder / "b") and not str(src).endswith(".old/b"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        get_file("two.tar.gz", url, extract=True, cache_dir=box.cache)
    monkeypatch.undo()
    assert (folder / "b" / "y.txt").read_bytes() == b"old b"  # the old entry was put back
    assert not (folder / ".kio" / "two.tar.gz.extracted.json").exists()
    get_file("two.tar.gz", url, extract=True, cache_dir=box.cache)
    assert (folder / "a" / "x.txt").read_bytes() == b"new a"
    assert (folder / "b" / "y.txt").read_bytes() == b"new b"


# -- the lock --------------------------------------------------------------------------
def test_threads_share_one_download(server: FaultServer, box: Sandbox) -> None:
    data = payload(1 << 20, seed=43)
    url = server.add("/t.bin", data, chunk_delay=0.01)
    results: list[str] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(get_file("t.bin", url, file_hash=sha256(data), cache_dir=box.cache))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(results) == 6 and len(set(results)) == 1
    assert Path(results[0]).read_bytes() == data
    assert server.body_hits("/t.bin") == 1


def test_lock_timeout_names_the_url_and_lock(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/held.bin", b"held")
    lock_path = box.cache / "datasets" / ".kio" / "held.bin.lock"
    lock_path.parent.mkdir(parents=True)
    with filelock.FileLock(str(lock_path)):
        start = time.perf_counter()
        with pytest.raises(TimeoutError) as info:
            get_file("held.bin", url, cache_dir=box.cache, lock_timeout=0.2)
        assert 0.15 < time.perf_counter() - start < 2.0
    assert url in str(info.value) and "held.bin.lock" in str(info.value)
    assert server.hits("/held.bin") == []
    assert Path(get_file("held.bin", url, cache_dir=box.cache, lock_timeout=0)).read_bytes() == (
        b"held"
    )


# -- arguments checked before anything is fetched --------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"backoff": -1}, ValueError, "backoff"),
        ({"backoff": "1"}, TypeError, "backoff"),
        ({"backoff": float("nan")}, ValueError, "backoff"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": (1, -2)}, ValueError, "timeout"),
        ({"timeout": (1, 2, 3)}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"lock_timeout": -1}, ValueError, "lock_timeout"),
        ({"retries": 2.0}, TypeError, "retries"),
        ({"retries": True}, TypeError, "retries"),
        ({"file_hash": "sha256:" + "0" * 63}, ValueError, "63 hex digits but sha256"),
        ({"file_hash": "sha256:"}, ValueError, "hex digest"),
        ({"file_hash": "md5:" + "0" * 64}, ValueError, "64 hex digits but md5"),
        ({"file_hash": "0" * 30}, ValueError, "30 digits"),
        ({"file_hash": "0" * 32, "hash_algorithm": "sha256"}, ValueError, "32 hex digits"),
        ({"file_hash": "sha1:" + "0" * 40, "hash_algorithm": "md5"}, ValueError, "sha1"),
        ({"file_hash": "xyz"}, ValueError, "file_hash"),
        ({"md5_hash": 5}, TypeError, "md5_hash"),
        ({"md5_hash": "0" * 31}, ValueError, "md5_hash has 31 hex digits"),
        ({"max_retry_after": -1}, ValueError, "max_retry_after"),
    ],
)
def test_bad_arguments_fail_before_any_request(
    server: FaultServer, box: Sandbox, kwargs: dict[str, object], error: type, words: str
) -> None:
    url = server.add("/arg.bin", b"arg")
    warns = pytest.warns(DeprecationWarning) if "md5_hash" in kwargs else nullcontext()
    with warns, pytest.raises(error, match=words):
        get_file("arg.bin", url, cache_dir=box.cache, **kwargs)  # type: ignore[arg-type]
    assert server.hits("/arg.bin") == []
    assert not (box.cache / "datasets" / "arg.bin").exists()


def test_timeout_pair_with_none_is_accepted(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/pair.bin", b"pair")
    path = get_file("pair.bin", url, cache_dir=box.cache, timeout=(5, None))
    assert Path(path).read_bytes() == b"pair"
    assert kio.validate_file(path, sha256(b"pair"))
