"""Extraction: Keras's layout, formats, the re-extraction marker, and crafted archives that
try to write outside the target (.., absolute paths, escaping links, device files)."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from _kio_helpers import FaultServer, Sandbox, make_tar, tar_bytes, tar_device, tar_link

import kio
import kregistry
from kio import UnsafeArchiveError, extract_archive, get_file


def serve_file(server: FaultServer, box: Sandbox, path: str) -> str:
    data = Path(path).read_bytes()
    box.known[os.path.basename(path)].append(data)
    return server.add("/" + os.path.basename(path), data)


def datasets(box: Sandbox) -> Path:
    return box.cache / "datasets"


def visible(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


@pytest.mark.parametrize(
    "mode, suffix", [("w:gz", "tar.gz"), ("w:bz2", "tar.bz2"), ("w:xz", "tar.xz"), ("w", "tar")]
)
def test_tar_formats_extract_beside_the_archive(
    server: FaultServer, box: Sandbox, mode: str, suffix: str
) -> None:
    archive = make_tar(
        str(box.src / f"set.{suffix}"), [("set/a.txt", b"A"), ("set/sub/b.txt", b"B")], mode
    )
    url = serve_file(server, box, archive)
    path = get_file(f"set.{suffix}", url, extract=True, cache_dir=box.cache)
    assert path == str(datasets(box) / f"set.{suffix}")  # Keras 2: the archive's path
    assert (datasets(box) / "set" / "sub" / "b.txt").read_bytes() == b"B"
    assert visible(datasets(box)) == sorted(["set", f"set.{suffix}"])


def test_zip_and_explicit_formats(server: FaultServer, box: Sandbox) -> None:
    archive = box.src / "z.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("z/one.txt", b"1")
    url = serve_file(server, box, str(archive))
    get_file("z.zip", url, extract=True, archive_format="zip", cache_dir=box.cache)
    assert (datasets(box) / "z" / "one.txt").read_bytes() == b"1"
    with pytest.warns(UserWarning, match="not an archive"):
        get_file("z2.zip", url, extract=True, archive_format="tar", cache_dir=box.cache)
    assert not (datasets(box) / "z2").exists()
    # archive_format=None: Keras's "no format", nothing extracted and nothing to warn about.
    get_file("z3.zip", url, extract=True, archive_format=None, cache_dir=box.cache)
    assert visible(datasets(box)) == ["z", "z.zip", "z2.zip", "z3.zip"]
    with pytest.raises(kregistry.UnknownObjectError, match="zip"):
        get_file("z4.zip", url, extract=True, archive_format="zpi", cache_dir=box.cache)
    with pytest.raises(TypeError, match="archive_format"):
        get_file("z4.zip", url, extract=True, archive_format=3, cache_dir=box.cache)
    box.known.update({"z2.zip": box.known["z.zip"], "z3.zip": box.known["z.zip"]})


def test_unchanged_archive_is_not_extracted_again(server: FaultServer, box: Sandbox) -> None:
    archive = make_tar(str(box.src / "m.tar.gz"), [("m/data.txt", b"original")])
    url = serve_file(server, box, archive)
    path = get_file("m.tar.gz", url, extract=True, cache_dir=box.cache)
    extracted = datasets(box) / "m" / "data.txt"
    extracted.write_bytes(b"edited by the user")
    get_file("m.tar.gz", url, extract=True, cache_dir=box.cache)
    assert extracted.read_bytes() == b"edited by the user"  # not extracted again
    os.utime(path, ns=(10**18, 10**18))  # the archive changed (new mtime)
    get_file("m.tar.gz", url, extract=True, cache_dir=box.cache)
    assert extracted.read_bytes() == b"original"
    (datasets(box) / "m").rename(datasets(box) / "moved")  # the output went away
    box.allowed.add("cache")
    get_file("m.tar.gz", url, extract=True, cache_dir=box.cache)
    assert extracted.read_bytes() == b"original"
    assert len(server.hits("/m.tar.gz")) == 1


def test_damaged_archive_leaves_nothing(server: FaultServer, box: Sandbox) -> None:
    good = make_tar(
        str(box.src / "full.tar.gz"), [(f"d/{i}.txt", os.urandom(3000)) for i in range(20)]
    )
    data = Path(good).read_bytes()
    url = server.add("/broken.tar.gz", data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged or truncated"):
        get_file("broken.tar.gz", url, extract=True, cache_dir=box.cache)
    assert visible(datasets(box)) == ["broken.tar.gz"]


def test_interrupted_custom_format_leaves_nothing(server: FaultServer, box: Sandbox) -> None:
    @kregistry.register(name="half", package="kio.archive")
    def half(path: str, target: str, unsafe: str) -> bool:
        os.makedirs(os.path.join(target, "out"))
        with open(os.path.join(target, "out", "first.txt"), "w") as handle:
            handle.write("partial")
        raise KeyboardInterrupt

    url = server.add("/c.bin", b"custom")
    with pytest.raises(KeyboardInterrupt):
        get_file("c.bin", url, extract=True, archive_format="half", cache_dir=box.cache)
    assert visible(datasets(box)) == ["c.bin"]


def test_user_archive_format_by_name(server: FaultServer, box: Sandbox) -> None:
    @kregistry.register(name="lines", package="kio.archive")
    def lines(path: str, target: str, unsafe: str) -> bool:
        text = Path(path).read_text(encoding="utf-8")
        if not text.startswith("LINES\n"):
            return False
        for index, line in enumerate(text.splitlines()[1:]):
            Path(target, f"line{index}.txt").write_text(line)
        return True

    url = server.add("/l.txt", b"LINES\nfirst\nsecond\n")
    get_file("l.txt", url, extract=True, archive_format=["tar", "lines"], cache_dir=box.cache)
    assert (datasets(box) / "line1.txt").read_text() == "second"


def test_user_format_escaping_link_is_caught_by_the_audit(box: Sandbox) -> None:
    def sneaky(path: str, target: str, unsafe: str) -> bool:
        os.symlink("/etc", os.path.join(target, "etc"))
        return True

    archive = box.source("s.bin", b"x")
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError, match="etc"):
        extract_archive(archive, out, archive_format=sneaky)
    assert visible(out) == []


# -- crafted tar archives -------------------------------------------------------------
EVIL = {
    "dotdot": [("ok/a.txt", b"a"), ("../escaped.txt", b"evil")],
    "nested_dotdot": [("ok/../../escaped.txt", b"evil")],
    "absolute": [("/tmp/kio_absolute_escape.txt", b"evil")],
    "symlink_absolute": [tar_link("ok/link", "/etc/passwd")],
    "symlink_dotdot": [tar_link("ok/link", "../../outside")],
    "symlink_chain": [tar_link("x", "."), tar_link("x/y", "..")],
    "write_through_symlink": [tar_link("sub", "."), ("sub/../../escaped.txt", b"evil")],
    "hardlink_out": [tar_link("ok/hard", "../../../etc/passwd", hard=True)],
    "hardlink_absolute": [tar_link("ok/hard", "/etc/passwd", hard=True)],
    "device": [tar_device("ok/null")],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_unsafe_tar_members_are_refused(server: FaultServer, box: Sandbox, case: str) -> None:
    data = tar_bytes(EVIL[case])
    url = server.add(f"/{case}.tar.gz", data)
    with pytest.raises(UnsafeArchiveError) as info:
        get_file(f"{case}.tar.gz", url, extract=True, cache_dir=box.cache)
    assert isinstance(info.value, ValueError) and "refusing" in str(info.value)
    assert visible(datasets(box)) == [f"{case}.tar.gz"]  # nothing extracted at all
    assert not (box.root / "escaped.txt").exists() and not (box.cache / "escaped.txt").exists()
    assert not os.path.exists("/tmp/kio_absolute_escape.txt")
    # The downloaded archive stays (it is what the server sent); only extraction refused.
    assert (datasets(box) / f"{case}.tar.gz").read_bytes() == data


def test_skip_mode_extracts_the_safe_members(server: FaultServer, box: Sandbox) -> None:
    data = tar_bytes(
        [
            ("ok/a.txt", b"a"),
            ("../escaped.txt", b"evil"),
            tar_link("ok/l", "/etc/passwd"),
            ("ok/b.txt", b"b"),
        ]
    )
    url = server.add("/mixed.tar.gz", data)
    with pytest.warns(UserWarning, match="skipping unsafe member") as record:
        get_file("mixed.tar.gz", url, extract=True, unsafe="skip", cache_dir=box.cache)
    assert len(record) == 2
    assert sorted(os.listdir(datasets(box) / "ok")) == ["a.txt", "b.txt"]
    assert not (box.cache / "escaped.txt").exists()


def test_safe_internal_links_and_modes(server: FaultServer, box: Sandbox) -> None:
    setuid = tarfile.TarInfo("pkg/tool")
    setuid.mode = 0o4777
    data = tar_bytes(
        [
            ("pkg/data.txt", b"payload"),
            tar_link("pkg/alias", "data.txt"),
            tar_link("pkg/copy", "pkg/data.txt", hard=True),
            setuid,
        ]
    )
    url = server.add("/pkg.tar.gz", data)
    get_file("pkg.tar.gz", url, extract=True, cache_dir=box.cache)
    pkg = datasets(box) / "pkg"
    assert os.readlink(pkg / "alias") == "data.txt" and (pkg / "alias").read_bytes() == b"payload"
    assert (pkg / "copy").read_bytes() == b"payload"
    assert (pkg / "tool").stat().st_mode & 0o7777 == 0o755  # no set-id, no world write


def test_unsafe_zip_members(box: Sandbox) -> None:
    for name in ("../escaped.txt", "/abs/escaped.txt", "C:/windows/escaped.txt"):
        archive = box.src / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("fine.txt", b"f")
            zf.writestr(name, b"evil")
        out = box.cache / "zip-out"
        with pytest.raises(UnsafeArchiveError, match="escaped"):
            extract_archive(archive, out)
        assert visible(out) == []
    with pytest.warns(UserWarning, match="skipping"):
        assert extract_archive(archive, out, unsafe="skip")
    assert visible(out) == ["fine.txt"]


def test_extract_archive_public_api(box: Sandbox) -> None:
    archive = make_tar(str(box.src / "p.tar"), [("p.txt", b"p")], "w")
    out = box.cache / "out"
    assert extract_archive(archive, out) is True
    assert (out / "p.txt").read_bytes() == b"p"
    assert extract_archive(archive, out, archive_format="zip") is False
    assert extract_archive(archive, out, archive_format=None) is False
    with pytest.raises(FileNotFoundError, match="nope"):
        extract_archive(box.src / "nope.tar", out)
    with pytest.raises(ValueError, match="unsafe"):
        extract_archive(archive, out, unsafe="yes")  # type: ignore[arg-type]
    assert kio.extract_archive is extract_archive
