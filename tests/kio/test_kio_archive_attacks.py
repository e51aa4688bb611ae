"""Crafted archives that try to write outside the extraction folder, built in each test.

- symlink chains whose resolved path passes PATH_MAX (the CVE-2025-4517 technique), which
  make `os.path.realpath(strict=False)` stop resolving: tar and zip, short and long
  cache paths, relative and absolute victims, `unsafe="raise"` and `"skip"`;
- a hard link to a member that was skipped, or to one that does not exist;
- zip archives: `..` and absolute names, symbolic links stored in the external
  attributes, writes through such links.

Every case checks the victim file outside the folder is intact.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from _kio_helpers import FaultServer, Sandbox, tar_bytes, tar_link

from kio import UnsafeArchiveError, extract_archive, get_file
from kio._archive import _temp_owner, _temp_tag

ORIGINAL = b"original victim"
EVIL = b"PWNED"


@dataclass
class Member:
    """A member for either format: a file (data), a folder, or a symbolic link."""

    name: str
    data: bytes | None = None
    folder: bool = False
    link: str | None = None


def build_tar(members: list[Member]) -> bytes:
    infos: list[tarfile.TarInfo | tuple[str, bytes]] = []
    for member in members:
        if member.link is not None:
            infos.append(tar_link(member.name, member.link))
        elif member.folder:
            info = tarfile.TarInfo(member.name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            infos.append(info)
        else:
            infos.append((member.name, member.data or b""))
    return tar_bytes(infos, mode="w")


def zip_link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the mode bits are in the high 16 bits
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def build_zip(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)  # on purpose
        for member in members:
            if member.link is not None:
                archive.writestr(*zip_link(member.name, member.link))
            elif member.folder:
                archive.writestr(member.name.rstrip("/") + "/", b"")
            else:
                archive.writestr(member.name, member.data or b"")
    return buffer.getvalue()


BUILDERS = {"tar": build_tar, "zip": build_zip}


def path_max_chain(dest: str, victim: Path, *, absolute: bool) -> list[Member]:
    """The CVE-2025-4517 archive for extraction into the folder `dest`.

    Folders `ddd...` and links `s<i> -> ddd...` nest so that `s0/s1/.../s<n>` is short
    but resolves to a path just under PATH_MAX; the link `lll...` made there pushes the
    resolved path past PATH_MAX, where `realpath(strict=False)` stops resolving and
    treats `.../lll/..` as `...`. The kernel follows it: `lll` climbs back to `dest`, and
    `escape` climbs further, to the victim's folder, through which the last member
    overwrites the victim.
    """
    depth = dest.count(os.sep)
    steps = max(16, depth + 2)
    component = "d" * min(250, (4095 - 127 - len(dest) - 1) // steps - 1)
    members: list[Member] = []
    path = ""
    names = [f"s{i}" for i in range(steps)]
    for name in names:
        members.append(Member(os.path.join(path, component), folder=True))
        members.append(Member(os.path.join(path, name), link=component))
        path = os.path.join(path, component)
    link_path = os.path.join(*names, "l" * 254)
    members.append(Member(link_path, link=os.path.join(*[".."] * steps)))
    if absolute:  # climb to "/" and come down the victim's absolute path
        climb = "/".join([".."] * depth) + str(victim.parent)
    else:  # climb from dest to the victim's folder
        climb = os.path.relpath(victim.parent, dest)
    members.append(Member("escape", link=f"{link_path}/{climb}"))
    members.append(Member(f"escape/{victim.name}", data=EVIL))
    return members


def estimated_dest(folder: Path, archive_name: str) -> str:
    """Where kio extracts first: a temporary folder inside `folder` (the random part of
    its name is 8 characters)."""
    temp = f"{_temp_tag(archive_name)}.{_temp_owner()}.{'r' * 8}"
    return str(folder.resolve() / temp)


def make_victim(box: Sandbox) -> Path:
    victim = box.src / "victim.txt"  # deliberately not a "known" file of the sandbox
    victim.write_bytes(ORIGINAL)
    return victim


def long_folder(box: Sandbox) -> Path:
    # About 1,700 characters and 10 levels below tmp_path.
    return box.cache.joinpath(*(["x" * 200] * 8))


def assert_nothing_outside(box: Sandbox, victim: Path, out: Path) -> None:
    """The victim is intact, no file outside `out` holds the payload, and every link
    inside `out` resolves inside."""
    assert victim.read_bytes() == ORIGINAL
    inside = out.resolve()
    for folder, _dirs, files in os.walk(box.root):
        if Path(folder).resolve().is_relative_to(inside):
            continue
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink() and path.suffix not in (".tar", ".zip"):
                assert path.read_bytes() != EVIL, f"written outside: {path}"
    for entry in out.rglob("*"):
        if entry.is_symlink():
            assert entry.resolve().is_relative_to(inside), entry


def test_the_chain_archive_escapes_without_checks(box: Sandbox) -> None:
    """The control: extracted with no checks at all (tarfile's "fully_trusted"), the
    crafted archive really writes outside, so the tests below test something real."""
    victim = make_victim(box)
    out = box.cache / "control"
    dest = out / ("t" * (len(estimated_dest(out, "c.tar")) - len(str(out.resolve())) - 1))
    dest.mkdir(parents=True)
    data = build_tar(path_max_chain(str(dest.resolve()), victim, absolute=False))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(dest, filter="fully_trusted")
    assert victim.read_bytes() == EVIL


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize("where", ["short", "long"])
@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
def test_path_max_symlink_chain_is_refused(
    box: Sandbox, fmt: str, where: str, absolute: bool
) -> None:
    victim = make_victim(box)
    out = box.cache / "out" if where == "short" else long_folder(box)
    out.mkdir(parents=True)
    name = f"chain.{fmt}"
    data = BUILDERS[fmt](path_max_chain(estimated_dest(out, name), victim, absolute=absolute))
    archive = box.src / name
    archive.write_bytes(data)
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, out)
    assert "link" in str(info.value) and "\n" not in str(info.value)
    assert victim.read_bytes() == ORIGINAL
    assert os.listdir(out) == []  # nothing extracted at all

    with pytest.warns(UserWarning, match="skipping unsafe member") as record:
        assert extract_archive(archive, out, unsafe="skip")
    skipped = {str(w.message).split("'")[1] for w in record}
    assert "escape" in skipped  # the link through the chain never exists
    assert_nothing_outside(box, victim, out)
    # The victim's name was extracted inside, as a plain file in a plain folder.
    assert (out / "escape" / victim.name).read_bytes() == EVIL
    assert not (out / "escape").is_symlink()


@pytest.mark.parametrize("unsafe", ["raise", "skip"])
def test_path_max_chain_through_get_file(server: FaultServer, box: Sandbox, unsafe: str) -> None:
    victim = make_victim(box)
    datadir = box.cache / "datasets"
    datadir.mkdir(parents=True)
    data = build_tar(path_max_chain(estimated_dest(datadir, "model"), victim, absolute=True))
    url = server.add("/model", data)
    if unsafe == "raise":
        with pytest.raises(UnsafeArchiveError):
            get_file("model", url, extract=True, cache_dir=box.cache)
        assert sorted(os.listdir(datadir)) == [".kio", "model"]
    else:
        with pytest.warns(UserWarning, match="skipping unsafe member"):
            get_file("model", url, extract=True, unsafe="skip", cache_dir=box.cache)
    assert_nothing_outside(box, victim, datadir)


# -- hard links --------------------------------------------------------------------------
def hard_link_to_skipped(victim: Path) -> bytes:
    return tar_bytes(
        [
            tar_link("evil", str(victim)),  # skipped: absolute target
            tar_link("hl", "evil", hard=True),  # tarfile would copy the skipped link here
            ("hl", EVIL),  # ... and this would write through it
            ("kept.txt", b"kept"),
        ],
        mode="w",
    )


def test_hard_link_to_a_skipped_member_is_skipped(box: Sandbox) -> None:
    victim = make_victim(box)
    archive = box.src / "hl.tar"
    archive.write_bytes(hard_link_to_skipped(victim))
    out = box.cache / "out"
    with pytest.warns(UserWarning) as record:
        assert extract_archive(archive, out, unsafe="skip")
    messages = [str(w.message) for w in record]
    assert any("'evil'" in m for m in messages)
    assert any("'hl'" in m and "did not extract" in m for m in messages)
    assert victim.read_bytes() == ORIGINAL
    assert (out / "hl").read_bytes() == EVIL and not (out / "hl").is_symlink()
    assert os.stat(out / "hl").st_nlink == 1
    assert (out / "kept.txt").read_bytes() == b"kept"
    assert not (out / "evil").exists()


def test_hard_link_to_a_skipped_member_is_refused(box: Sandbox) -> None:
    victim = make_victim(box)
    archive = box.src / "hl.tar"
    archive.write_bytes(hard_link_to_skipped(victim))
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, out)
    assert info.value.member == "evil"
    # Even when the first refusal is left aside, the hard link itself is refused.
    only_link = tar_bytes([tar_link("hl", "evil", hard=True), ("hl", EVIL)], mode="w")
    archive.write_bytes(only_link)
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, out)
    assert info.value.member == "hl"
    assert victim.read_bytes() == ORIGINAL
    assert os.listdir(out) == []


def test_hard_link_to_a_member_that_was_replaced_by_a_skipped_one(box: Sandbox) -> None:
    """`f` is first a file, then an unsafe link (skipped): the archive's last word on
    `f` is the skipped link, so a hard link to `f` is skipped too."""
    victim = make_victim(box)
    data = tar_bytes(
        [("f", b"file"), tar_link("f", str(victim)), tar_link("h", "f", hard=True)], mode="w"
    )
    archive = box.src / "replaced.tar"
    archive.write_bytes(data)
    out = box.cache / "out"
    with pytest.warns(UserWarning) as record:
        extract_archive(archive, out, unsafe="skip")
    assert [str(w.message).split("'")[1] for w in record] == ["f", "h"]
    assert not (out / "h").exists() and victim.read_bytes() == ORIGINAL


@pytest.mark.parametrize("target", ["missing", "dir/missing", "later"])
def test_dangling_hard_link_is_an_unsafe_archive_error(box: Sandbox, target: str) -> None:
    data = tar_bytes(
        [("ok.txt", b"ok"), tar_link("dangling", target, hard=True), ("later", b"late")],
        mode="w",
    )
    archive = box.src / "dangling.tar"
    archive.write_bytes(data)
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, out)
    error = info.value
    assert isinstance(error, ValueError) and not isinstance(error, KeyError)
    assert error.member == "dangling" and error.archive == str(archive)
    message = str(error)
    assert "\n" not in message and "'dangling'" in message and repr(target) in message
    assert os.listdir(out) == []
    with pytest.warns(UserWarning, match="'dangling'"):
        assert extract_archive(archive, out, unsafe="skip")
    assert sorted(os.listdir(out)) == ["later", "ok.txt"]


def test_hard_links_inside_still_work(box: Sandbox) -> None:
    data = tar_bytes(
        [
            ("d/f.txt", b"payload"),
            tar_link("d/h.txt", "d/f.txt", hard=True),
            tar_link("top", "d/f.txt", hard=True),
            tar_link("s", "d"),
            tar_link("hs", "s", hard=True),  # a hard link to a link: the same link here
        ],
        mode="w",
    )
    archive = box.src / "ok.tar"
    archive.write_bytes(data)
    out = box.cache / "out"
    assert extract_archive(archive, out)
    assert (out / "d" / "h.txt").read_bytes() == b"payload"
    assert (out / "top").read_bytes() == b"payload"
    assert os.stat(out / "top").st_ino == os.stat(out / "d" / "f.txt").st_ino
    assert (out / "hs" / "f.txt").read_bytes() == b"payload"


def test_hard_link_to_a_link_is_judged_at_its_new_place(box: Sandbox) -> None:
    # "a/b/s" -> "../x" is inside where it is (a/x); the same link text at the top
    # ("../x") would leave the folder.
    data = tar_bytes(
        [("a/x", b"x"), tar_link("a/b/s", "../x"), tar_link("h", "a/b/s", hard=True)], mode="w"
    )
    archive = box.src / "moved.tar"
    archive.write_bytes(data)
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError, match="outside") as info:
        extract_archive(archive, out)
    assert info.value.member == "h"


# -- links and writes through links (tar and zip) -----------------------------------------
ESCAPES: dict[str, list[Member]] = {
    "dotdot_name": [Member("ok/a.txt", b"a"), Member("../escaped.txt", EVIL)],
    "inner_dotdot_name": [Member("ok/../../escaped.txt", EVIL)],
    "absolute_name": [Member("/abs/escaped.txt", EVIL)],
    "link_absolute": [Member("ok/link", link="/etc/passwd")],
    "link_climbing": [Member("ok/link", link="../../outside")],
    "link_dotdot_after_name": [Member("a", link="p/.."), Member("p", link=".")],
    "write_through_link": [Member("sub", link="."), Member("sub/escaped.txt", EVIL)],
    "write_at_a_link": [Member("ok", folder=True), Member("f", link="ok"), Member("f", EVIL)],
    "folder_at_a_link": [
        Member("ok", folder=True),
        Member("f", link="ok"),
        Member("f/", folder=True),
    ],
}


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escapes_are_refused_in_both_formats(box: Sandbox, fmt: str, case: str) -> None:
    archive = box.src / f"{case}.{fmt}"
    archive.write_bytes(BUILDERS[fmt](ESCAPES[case]))
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, out, archive_format=fmt)
    assert "\n" not in str(info.value)
    assert os.listdir(out) == []
    assert not (box.cache / "escaped.txt").exists() and not (box.root / "escaped.txt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extract_archive(archive, out, archive_format=fmt, unsafe="skip")
    for folder, _, files in os.walk(out):
        for name in files:
            assert Path(folder, name).resolve().is_relative_to(out.resolve())
    for entry in out.rglob("*"):
        if entry.is_symlink():
            assert entry.resolve().is_relative_to(out.resolve())


def test_zip_links_inside_become_links(box: Sandbox) -> None:
    members = [
        Member("pkg/data.txt", b"payload"),
        Member("pkg/alias", link="data.txt"),
        Member("pkg/sub/up", link="../data.txt"),
        Member("pkg/dirlink", link="sub"),
    ]
    archive = box.src / "links.zip"
    archive.write_bytes(build_zip(members))
    out = box.cache / "out"
    assert extract_archive(archive, out)
    assert os.readlink(out / "pkg" / "alias") == "data.txt"
    assert (out / "pkg" / "alias").read_bytes() == b"payload"
    assert (out / "pkg" / "sub" / "up").read_bytes() == b"payload"
    assert (out / "pkg" / "dirlink" / "up").read_bytes() == b"payload"


def test_zip_special_file_modes_are_refused(box: Sandbox) -> None:
    info = zipfile.ZipInfo("fifo")
    info.create_system = 3
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    archive = box.src / "fifo.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", b"f")
        zf.writestr(info, b"")
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError, match="special"):
        extract_archive(archive, out)
    with pytest.warns(UserWarning, match="fifo"):
        extract_archive(archive, out, unsafe="skip")
    assert os.listdir(out) == ["fine.txt"]


def test_symlink_loops_and_long_links_in_user_formats_are_unsafe(box: Sandbox) -> None:
    """The audit resolves every link strictly: a loop (ELOOP) cannot be proven inside."""

    def loops(path: str, target: str, unsafe: str) -> bool:
        os.symlink("b", os.path.join(target, "a"))
        os.symlink("a", os.path.join(target, "b"))
        return True

    archive = box.src / "any.bin"
    archive.write_bytes(b"x")
    out = box.cache / "out"
    with pytest.raises(UnsafeArchiveError, match="cannot be resolved"):
        extract_archive(archive, out, archive_format=loops)
    assert os.listdir(out) == []
