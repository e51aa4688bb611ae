"""Archive formats by name (through kregistry) and safe extraction.

An archive format is a callable `fmt(path, target, unsafe) -> bool`: it returns False
when the file at `path` is not in its format, else extracts it into the (new, empty)
folder `target` and returns True. `unsafe` is `"raise"` or `"skip"`, what to do with a
member that could land outside `target`. The built-ins `"tar"` (tar, tar.gz, tar.bz2,
tar.xz) and `"zip"` live in this module (Keras's "module objects"), not in the user's
custom objects; a format a user registers as `"kio.archive>NAME"` is found first.

How the built-in formats keep every member inside `target`:

- a member name that is empty, absolute (`/x`, `C:x`, `//host/x`) or has a `..`
  component is refused (GNU tar refuses `..` as well);
- no member is ever written through a symbolic link: once the archive has made a link,
  every later member's path is checked with `lstat`, component by component, and one
  that passes through a link (or would write through one) is refused;
- a symbolic link must be relative, and its target is checked without asking the file
  system: `..` may only come first (and never climb above the folder), no `..` may
  follow a name (that name may itself be a link). Nothing relies on
  `os.path.realpath(strict=False)`, which gives up silently past `PATH_MAX` (the
  CVE-2025-4517 technique);
- a hard link must point to a file or link that this archive extracted before it (not
  skipped, not missing); a hard link to a symbolic link is checked as that link made at
  the hard link's place;
- device files, FIFOs and other special members are refused;
- for tar, the standard library's `data` filter runs too when this Python has it;
  files lose set-id bits and group/other write permission and are not chowned.

Extraction always goes to a hidden temporary folder inside the destination. What a
format wrote is audited there (every link is resolved strictly, and any error while
resolving one, such as `ENAMETOOLONG` or `ELOOP`, counts as unsafe; no device file or
FIFO), the built-in formats check that every member they extracted is in place, and only
then are the top-level entries renamed into place and counted again. An interrupted
extraction leaves nothing that looks complete.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import hashlib
import logging
import lzma
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import kregistry
from kio._log import logger, warn_caller
from kio._state import TEMP_PREFIX

__all__ = [
    "ARCHIVE_NAMESPACE",
    "ArchiveFormat",
    "UnsafeArchiveError",
    "extract_archive",
    "extract_to_folder",
    "resolve_archive_formats",
    "tar_format",
    "zip_format",
]

ARCHIVE_NAMESPACE = "kio.archive"
Unsafe = Literal["raise", "skip"]
ArchiveFormat = Callable[[str, str, str], bool]
# A temporary folder of another host (or of a process whose liveness cannot be checked)
# is removed as stale only once it is this old.
STALE_AFTER_S = 24 * 3600.0


class UnsafeArchiveError(ValueError):
    """An archive member that could be written outside the extraction folder.

    `UnsafeArchiveError(archive, member, reason)` builds the message;
    `UnsafeArchiveError(message)` keeps a message as it is (so the error can be rebuilt
    from its text, as torch does with an error raised in a DataLoader worker). It
    pickles with its attributes.

    Attributes:
        archive: the archive's path (None when built from a message alone).
        member: the member's name in the archive (None when built from a message alone).
        reason: why it is refused (None when built from a message alone).
    """

    archive: str | None
    member: str | None
    reason: str | None

    def __init__(
        self, archive_or_message: str, member: str | None = None, reason: str | None = None
    ) -> None:
        if member is None and reason is None:
            message, archive = str(archive_or_message), None
        else:
            archive = archive_or_message
            message = (
                f"refusing to extract {archive!r}: member {member!r} {reason}; nothing was "
                "extracted (pass unsafe='skip' to leave such members out with a warning)"
            )
        super().__init__(message)
        self.archive = archive
        self.member = member
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _IncompleteExtraction(OSError):
    """Members that an extraction wrote are not all in place (another process changed
    the folder meanwhile); raised as an OSError naming the archive and the member."""


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _is_absolute(unified: str) -> bool:
    """Whether a name with `/` separators is absolute (`/x`, `//host/x`) or has a drive."""
    return unified.startswith("/") or (len(unified) > 1 and unified[1] == ":")


def _lexical_problem(name: str) -> str | None:
    """Why a member name is unsafe on its own (absolute, drive, `..`), else None."""
    if not name:
        return "has an empty name"
    if "\0" in name:
        return "has a NUL character in its name"
    unified = name.replace("\\", "/")
    if _is_absolute(unified):
        return "has an absolute path"
    if ".." in unified.split("/"):
        return "has a '..' component, which could lead outside the target folder"
    return None


def _parts(name: str) -> tuple[str, ...]:
    """The path components of a (checked) member name, without `.` and empty ones."""
    return tuple(part for part in name.split("/") if part not in ("", "."))


def _symlink_problem(folder: tuple[str, ...], link: str) -> str | None:
    """Why a symbolic link made in `folder` (components below the root) with target
    `link` could resolve outside the root, judged without the file system, else None.

    Leading `..` climb through the member's own parent folders, which are real folders
    (no member is written through a link), so they stay inside as long as there are no
    more of them than parent folders. After the first name, a `..` could climb out of
    whatever that name leads to (it may be a link), so it is refused.
    """
    if not link:
        return "is a link with an empty target"
    if "\0" in link:
        return "is a link with a NUL character in its target"
    unified = link.replace("\\", "/")
    if _is_absolute(unified):
        return f"is a link to an absolute path {link!r}, outside the target folder"
    climbs = 0
    named = False
    for part in unified.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if named:
                return (
                    f"is a link to {link!r}, which could point outside the target folder "
                    "('..' after a name that may itself be a link)"
                )
            climbs += 1
        else:
            named = True
    if climbs > len(folder):
        return f"is a link pointing outside the target folder ({link!r})"
    return None


@dataclass(frozen=True)
class _Placed:
    """What a member put at a path: kind "file" (with its size), "dir" or "symlink"."""

    kind: str
    size: int = 0
    link: str = ""


class _Guard:
    """Checks each member just before it is written and remembers what was written.

    `check` is called for every member in archive order, right before the member is
    extracted (the checks see the files and links already written); it returns the
    member's path components, or None when the member is skipped (`unsafe="skip"`).
    `verify` checks at the end that everything extracted is still in place.
    """

    def __init__(self, archive: str, target: str, unsafe: str) -> None:
        self.archive = archive
        self.root = os.path.realpath(target)
        self.unsafe = unsafe
        self.placed: dict[tuple[str, ...], _Placed] = {}
        self.skipped: list[str] = []
        self.count = 0
        # While no link has been written no path component can redirect a write, so the
        # lexical checks are exact and the per-component lstat calls are not needed.
        self.links_written = False

    def refuse(self, member: str, reason: str) -> None:
        """Raise, or warn and remember the member as skipped; what its name held before
        is no longer the archive's last word on it (a hard link to it is refused)."""
        _refuse(self.archive, member, reason, self.unsafe)
        self.skipped.append(member)
        self.placed.pop(_parts(member), None)

    def _path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)

    def _walk_problem(self, parts: tuple[str, ...], *, last_may_be_link: bool) -> str | None:
        """Why writing at `parts` would pass through (or write through) a link."""
        if not self.links_written:
            return None
        last = len(parts) if not last_may_be_link else len(parts) - 1
        for index in range(1, last + 1):
            here = parts[:index]
            try:
                mode = os.lstat(self._path(here)).st_mode
            except FileNotFoundError:
                return None  # nothing deeper exists: it will be made as folders
            except OSError as exc:  # ENAMETOOLONG, ENOTDIR, ELOOP...: not provably safe
                return (
                    f"cannot be checked ({errno.errorcode.get(exc.errno or 0, 'error')}: "
                    f"{exc.strerror}), so it could lead outside the target folder"
                )
            if stat.S_ISLNK(mode):
                where = "/".join(here)
                return (
                    f"would be written through the link {where!r} made by the archive, "
                    "which could lead outside the target folder"
                )
        return None

    def check(self, name: str, kind: str, link: str = "") -> tuple[str, ...] | None:
        """Approve (returns the path components) or refuse a member of `kind` "file",
        "dir", "symlink", "hardlink" or "special"."""
        reason = self._problem(name, kind, link)
        if reason is not None:
            self.refuse(name, reason)
            return None
        return _parts(name)

    def _problem(self, name: str, kind: str, link: str) -> str | None:
        if kind == "special":
            return "is a device file, FIFO or other special file"
        reason = _lexical_problem(name)
        if reason is not None:
            return reason
        parts = _parts(name)
        if not parts:
            return None if kind == "dir" else "would replace the target folder itself"
        reason = self._walk_problem(parts, last_may_be_link=kind == "symlink")
        if reason is not None:
            return reason
        if kind == "symlink":
            return _symlink_problem(parts[:-1], link)
        if kind == "hardlink":
            return self._hardlink_problem(parts, link)
        return None

    def _hardlink_problem(self, parts: tuple[str, ...], link: str) -> str | None:
        reason = _lexical_problem(link)
        if reason is not None:
            return f"is a hard link to {link!r}, which {reason}"
        source = _parts(link)
        placed = self.placed.get(source)
        if placed is None or not source:
            return (
                f"is a hard link to {link!r}, which this archive did not extract before it "
                "(missing or skipped), so it could lead outside the target folder"
            )
        if placed.kind == "dir":
            return f"is a hard link to the folder {link!r}"
        reason = self._walk_problem(source, last_may_be_link=True)
        if reason is not None:
            return f"is a hard link to {link!r}, which {reason}"
        if placed.kind == "symlink":
            # A hard link to a symbolic link is the same link text at a new place.
            reason = _symlink_problem(parts[:-1], placed.link)
            if reason is not None:
                return f"is a hard link to the link {link!r}, which at its place {reason}"
        try:
            mode = os.lstat(self._path(source)).st_mode
        except OSError:
            mode = 0
        expected = stat.S_ISLNK if placed.kind == "symlink" else stat.S_ISREG
        if not expected(mode):
            return f"is a hard link to {link!r}, which is no longer in place"
        return None

    def record(self, parts: tuple[str, ...], kind: str, size: int = 0, link: str = "") -> None:
        """Remember what an approved member put at `parts`."""
        self.count += 1
        if kind == "hardlink":
            source = self.placed[_parts(link)]
            kind, size, link = source.kind, source.size, source.link
        if kind == "symlink":
            self.links_written = True
        if parts:
            self.placed[parts] = _Placed(kind, size, link)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("extracting member %r (%s) of %s", "/".join(parts), kind, self.archive)

    def verify(self) -> None:
        """Raise when a member extracted into the temporary folder is no longer there."""
        for parts, placed in self.placed.items():
            path = self._path(parts)
            member = "/".join(parts)
            try:
                st = os.lstat(path)
            except OSError:
                raise _IncompleteExtraction(
                    errno.ENOENT,
                    f"could not extract {self.archive!r}: member {member!r} is missing after "
                    "extraction (was the folder changed by another process?); nothing was kept",
                ) from None
            good = {
                "file": stat.S_ISREG,
                "dir": stat.S_ISDIR,
                "symlink": stat.S_ISLNK,
            }[placed.kind](st.st_mode)
            # A file sharing its inode with a hard link may have been rewritten through a
            # later member of the same name; only unshared files must keep their size.
            if good and placed.kind == "file" and st.st_nlink == 1:
                good = st.st_size == placed.size
            if not good:
                raise _IncompleteExtraction(
                    errno.EIO,
                    f"could not extract {self.archive!r}: member {member!r} is not as "
                    "extracted (was the folder changed by another process?); nothing was kept",
                )


def _refuse(archive: str, member: str, reason: str, unsafe: str) -> None:
    if unsafe == "skip":
        warn_caller(f"skipping unsafe member {member!r} of {archive!r}: {reason}")
        return
    raise UnsafeArchiveError(archive, member, reason)


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    return "special"


def _clean_tar_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """As tarfile's `data` filter, for Pythons without it: no owners, no set-id/sticky
    bits, no group/other write; files and folders stay usable by their owner."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    if not member.issym():
        mode = member.mode & 0o755
        if member.isreg() or member.islnk():
            mode |= 0o600
        elif member.isdir():
            mode |= 0o700
        member.mode = mode
    return member


class _TarFilter:
    """kio's checks, then the standard library's `data` filter where it exists."""

    def __init__(self, guard: _Guard) -> None:
        self.guard = guard

    def __call__(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        kind = _tar_kind(member)
        parts = self.guard.check(member.name, kind, member.linkname)
        if parts is None:
            return None
        data_filter = getattr(tarfile, "data_filter", None)
        if data_filter is None:
            cleaned = _clean_tar_member(member)
        else:
            try:
                cleaned = data_filter(member, path)
            except tarfile.FilterError as exc:
                self.guard.refuse(member.name, f"is refused by tarfile's data filter ({exc})")
                return None
            if cleaned is None:  # pragma: no cover - the data filter drops nothing today
                return None
            if cleaned.isdir():
                # The data filter leaves folders at mkdir's 0o700; keep them readable.
                cleaned = cleaned.replace(mode=(member.mode & 0o755) | 0o700, deep=False)
        self.guard.record(parts, kind, member.size, member.linkname)
        return cleaned


def _tar_members(archive: tarfile.TarFile, check: _TarFilter, path: str) -> Iterator[Any]:
    for member in archive:
        cleaned = check(member, path)
        if cleaned is not None:
            yield cleaned


def _read_to_the_end(archive: tarfile.TarFile, path: str) -> None:
    """Decompress what follows the tar's end marker, so the stream's checksum is tested.

    tarfile stops at the end-of-archive marker, but gzip, bzip2 and xz test their
    checksums only at the end of a member, block or stream. Without this, bytes damaged
    inside a stored (incompressible) stretch would be extracted as if they were right.
    Bytes after the last compressed stream are ignored, as `gzip -d` (which warns),
    `bzip2 -d` and `xz -d` ignore them.
    """
    stream = archive.fileobj
    if not isinstance(stream, (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)):
        return  # an uncompressed tar has no checksum beyond its headers'
    try:
        while stream.read(1 << 20):
            pass
    except gzip.BadGzipFile as exc:
        # The members before were tested when they ended; this is trailing data.
        if not str(exc).startswith("Not a gzipped file"):
            raise
    except EOFError:
        # Python's lzma reads the xz format's stream padding (zero bytes after a whole
        # stream) as the start of a truncated stream.
        if not (isinstance(stream, lzma.LZMAFile) and _ends_in_xz_stream_padding(path)):
            raise


def _ends_in_xz_stream_padding(path: str) -> bool:
    """Whether `path` ends in an xz stream footer and then zero bytes, a multiple of 4."""
    with open(path, "rb") as file:
        size = end = file.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - (1 << 16))
            file.seek(start)
            kept = file.read(end - start).rstrip(b"\0")
            end = start + len(kept)
            if kept:
                break
        padding = size - end
        if padding == 0 or padding % 4 or end < 12:
            return False
        file.seek(end - 2)
        return file.read(2) == b"YZ"  # the footer's magic bytes


def tar_format(path: str, target: str, unsafe: str = "raise") -> bool:
    """The `'tar'` archive format: tar, tar.gz, tar.bz2 and tar.xz.

    Args:
        path: the archive.
        target: an empty folder to extract into.
        unsafe: `"raise"` or `"skip"` for members that could escape `target`.

    Returns:
        False when `path` is not a tar archive, else True once extracted.

    Raises:
        UnsafeArchiveError: an unsafe member and `unsafe="raise"`.
    """
    if not tarfile.is_tarfile(path):
        return False
    guard = _Guard(path, target, unsafe)
    check = _TarFilter(guard)
    with tarfile.open(path) as archive:
        try:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(target, filter=check)
            else:  # pragma: no cover - Pythons before the extraction filters
                archive.extractall(target, members=_tar_members(archive, check, target))
            _read_to_the_end(archive, path)
        except OSError as exc:
            # bz2 tells damaged data by an OSError without an errno; the file system's
            # own errors always carry one.
            if isinstance(archive.fileobj, bz2.BZ2File) and exc.errno is None:
                raise _DamagedStreamError(f"bzip2: {exc}") from None
            raise
    guard.verify()
    _finish_log(guard)
    return True


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if info.is_dir():
        return "dir"
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special"
    return "file"


def zip_format(path: str, target: str, unsafe: str = "raise") -> bool:
    """The `'zip'` archive format.

    Symbolic links stored in the zip (Unix mode bits in the external attributes) are made
    as links when they are safe, under the same rules as tar links; the standard
    library's `zipfile` would write them as small files holding the target's text.

    Args:
        path: the archive.
        target: an empty folder to extract into.
        unsafe: `"raise"` or `"skip"` for members that could escape `target`.

    Returns:
        False when `path` is not a zip archive, else True once extracted.

    Raises:
        UnsafeArchiveError: an unsafe member and `unsafe="raise"`.
        ValueError: an encrypted member or an unsupported compression.
    """
    if not zipfile.is_zipfile(path):
        return False
    guard = _Guard(path, target, unsafe)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            try:
                kind = _zip_kind(info)
                link = ""
                if kind == "symlink":
                    if info.file_size > 4096:
                        guard.refuse(info.filename, "is a link with a target over 4096 bytes")
                        continue
                    link = archive.read(info).decode("utf-8", "surrogateescape")
                parts = guard.check(info.filename, kind, link)
                if parts is None:
                    continue
                destination = os.path.join(guard.root, *parts)
                if kind == "dir":
                    os.makedirs(destination, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(destination), exist_ok=True)
                    if kind == "symlink":
                        if os.path.lexists(destination):
                            os.unlink(destination)
                        os.symlink(link, destination)
                    else:
                        with archive.open(info) as source, open(destination, "wb") as sink:
                            shutil.copyfileobj(source, sink, 1 << 20)
            except (RuntimeError, NotImplementedError) as exc:
                # zipfile's words for an encrypted member or an unsupported compression.
                raise ValueError(f"could not extract {path!r}: {exc}") from None
            guard.record(parts, kind, info.file_size, link)
    guard.verify()
    _finish_log(guard)
    return True


def _finish_log(guard: _Guard) -> None:
    if guard.skipped:
        shown = ", ".join(repr(name) for name in guard.skipped[:10])
        more = f" and {len(guard.skipped) - 10} more" if len(guard.skipped) > 10 else ""
        logger.info(
            "skipped %d unsafe member(s) of %s (unsafe='skip'): %s%s",
            len(guard.skipped),
            guard.archive,
            shown,
            more,
        )
    logger.debug("extracted %d member(s) of %s", guard.count, guard.archive)


# The built-in formats: Keras's "module objects", never stored in the user's custom
# objects. kregistry.resolve looks at the registry first, so a user's own
# "kio.archive>tar" wins over these.
_BUILTINS: dict[str, ArchiveFormat] = {"tar": tar_format, "zip": zip_format}


def resolve_archive_formats(archive_format: Any) -> list[ArchiveFormat]:
    """Turn `archive_format` into the list of formats to try, in order.

    Args:
        archive_format: `'auto'` (`['tar', 'zip']`, as in Keras), a format name (a
            built-in or one registered under `"kio.archive"`), a format callable, a list
            of those, or None / an empty list (no format).

    Raises:
        kregistry.UnknownObjectError: an unknown name (a `ValueError`).
        TypeError: an entry that is neither a name nor a callable.
    """
    if archive_format is None:
        return []
    if isinstance(archive_format, str) and archive_format == "auto":
        archive_format = ["tar", "zip"]
    if isinstance(archive_format, str) or callable(archive_format):
        archive_format = [archive_format]
    if not isinstance(archive_format, Sequence):
        raise TypeError(
            "archive_format must be 'auto', a format name ('tar', 'zip' or a registered "
            f"one), a callable, a list of those, or None; got {archive_format!r}"
        )
    formats: list[ArchiveFormat] = []
    for entry in archive_format:
        if not isinstance(entry, str) and not callable(entry):
            raise TypeError(
                f"archive_format entries must be names or callables, got {entry!r} "
                f"({type(entry).__name__})"
            )
        formats.append(
            kregistry.resolve(
                entry, kind="archive format", namespace=ARCHIVE_NAMESPACE, module_objects=_BUILTINS
            )
        )
    return formats


def _link_problem_on_disk(path: str, root: str) -> str | None:
    """Why the link at `path` could lead outside `root`, resolving it strictly."""
    try:
        resolved = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        # A dangling link: judged by its text, as the tar rules judge a link.
        try:
            link = os.readlink(path)
        except OSError as exc:
            return f"is a link that cannot be read ({exc.strerror})"
        folder = _parts(os.path.relpath(os.path.dirname(path), root).replace(os.sep, "/"))
        return _symlink_problem(folder, link)
    except OSError as exc:  # ELOOP, ENAMETOOLONG, EACCES...: not provably inside
        name = errno.errorcode.get(exc.errno or 0, "error")
        return (
            f"is a link that cannot be resolved ({name}: {exc.strerror}), "
            "so it could point outside the target folder"
        )
    if not _is_within(resolved, root):
        return "is a link pointing outside the target folder"
    return None


def _audit(folder: str, archive: str, unsafe: str) -> None:
    """Refuse (or remove) links that may resolve outside `folder`, and special files."""
    root = os.path.realpath(folder)
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError as exc:
            relative = os.path.relpath(current, root)
            _refuse(archive, relative, f"cannot be checked ({exc.strerror})", unsafe)
            remove_tree(current)
            continue
        for entry in entries:
            relative = os.path.relpath(entry.path, root)
            if entry.is_symlink():
                reason = _link_problem_on_disk(entry.path, root)
                if reason is not None:
                    _refuse(archive, relative, reason, unsafe)
                    os.unlink(entry.path)
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif not entry.is_file(follow_symlinks=False):
                _refuse(archive, relative, "is a device file, FIFO or socket", unsafe)
                os.unlink(entry.path)


def remove_tree(path: str) -> None:
    """Remove a file, link or folder tree if present (never follows links)."""
    if os.path.islink(path) or os.path.isfile(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


# -- temporary folders: named per archive and per owner, cleaned only when stale ---------
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _temp_tag(archive_name: str) -> str:
    """The exact name part shared by the temporary folders of one archive (no dots)."""
    digest = hashlib.sha256(archive_name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in archive_name)[:32]
    return f"{TEMP_PREFIX}{readable}-{digest}"


def _temp_owner() -> str:
    return f"{_HOST}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) is not a probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _is_stale(path: str, owner: str) -> bool:
    host, _, pid_text = owner.rpartition("-")
    try:
        age = time.time() - os.lstat(path).st_mtime
    except OSError:
        return False
    if age > STALE_AFTER_S:
        return True
    if host != _HOST or not pid_text.isdigit():
        return False  # another machine's process: only its age tells
    pid = int(pid_text)
    return pid != os.getpid() and not _pid_alive(pid)


def clean_stale_temps(folder: str, archive_name: str) -> list[str]:
    """Remove the temporary folders that interrupted extractions of this archive left.

    Only folders of exactly this archive (not of an archive whose name merely starts the
    same) whose owning process is gone (or that are older than a day) are removed.
    Returns the names removed.
    """
    tag = _temp_tag(archive_name)
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if not name.startswith(TEMP_PREFIX):
                continue
            base = name[: -len(".old")] if name.endswith(".old") else name
            fields = base.rsplit(".", 2)
            if len(fields) != 3 or fields[0] != tag:
                continue
            if _is_stale(entry.path, fields[1]):
                logger.info("removing the stale extraction folder %s", entry.path)
                remove_tree(entry.path)
                removed.append(name)
    return removed


class _DamagedStreamError(ValueError):
    """A decompressor found damaged data but said so with an error of another kind."""


# Errors of the decompressors and archive readers that mean "damaged or truncated".
_DAMAGED = (
    _DamagedStreamError,
    tarfile.TarError,
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    EOFError,
    lzma.LZMAError,
    zlib.error,
)


def _member_error(exc: OSError, archive: str, temp: str) -> OSError:
    """`exc` retold with the member's name instead of the hidden temporary path."""
    if isinstance(exc, _IncompleteExtraction):
        return exc
    where = exc.filename if isinstance(exc.filename, str) else ""
    real_temp = os.path.realpath(temp)
    member = where
    for prefix in (temp, real_temp):
        if where.startswith(prefix + os.sep):
            member = where[len(prefix) + len(os.sep) :]
            break
    return OSError(exc.errno, f"could not extract {archive!r}: member {member!r}: {exc.strerror}")


def _inventory(path: str) -> tuple[int, int, int, int]:
    """(files, folders, links, bytes) under `path` (itself included), links not followed."""
    files = folders = links = size = 0
    stack = [path]
    while stack:
        current = stack.pop()
        st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            links += 1
        elif stat.S_ISDIR(st.st_mode):
            folders += 1
            with os.scandir(current) as entries:
                stack.extend(entry.path for entry in entries)
        else:
            files += 1
            size += st.st_size
    return files, folders, links, size


def extract_to_folder(
    file_path: str,
    path: str,
    formats: list[ArchiveFormat],
    unsafe: str = "raise",
    reserved: Sequence[str] = (),
) -> list[str] | None:
    """Extract into `path` through a temporary folder; return the top-level entries.

    Returns None when no format matched. Entries of the archive's top level replace
    same-named entries of `path`, each by one rename; the entries are counted before and
    after (files, folders, links, bytes), so a list is only returned when everything
    extracted is in place. A top-level entry named in `reserved` (get_file passes its
    state folder) is unsafe, as is one that looks like an extraction temporary.
    """
    os.makedirs(path, exist_ok=True)
    archive_name = os.path.basename(file_path)
    temp = tempfile.mkdtemp(prefix=f"{_temp_tag(archive_name)}.{_temp_owner()}.", dir=path)
    trash = temp + ".old"
    logger.info("extracting %s into %s", file_path, path)
    try:
        try:
            for fmt in formats:
                if _call_format(fmt, file_path, temp, unsafe):
                    break
            else:
                return None
        except gzip.BadGzipFile:
            raise  # an OSError, but a damaged archive: reported below
        except OSError as exc:
            raise _member_error(exc, file_path, temp) from None
        # Whatever wrote the files (a user's format too), nothing leaves this folder
        # unless every link in it resolves inside and no special file is there.
        _audit(temp, file_path, unsafe)
        entries = []
        for name in sorted(os.listdir(temp)):
            if name in reserved or name.startswith(TEMP_PREFIX):
                _refuse(file_path, name, "would replace kio's own files in the folder", unsafe)
                continue
            entries.append(name)
        final_archive = os.path.realpath(file_path)
        for name in entries:
            if os.path.realpath(os.path.join(path, name)) == final_archive:
                raise UnsafeArchiveError(file_path, name, "would overwrite the archive itself")
        counts = {name: _inventory(os.path.join(temp, name)) for name in entries}
        for name in entries:
            destination = os.path.join(path, name)
            aside = os.path.join(trash, name)
            if os.path.lexists(destination):
                os.makedirs(trash, exist_ok=True)
                os.replace(destination, aside)
            try:
                os.replace(os.path.join(temp, name), destination)
            except BaseException:
                if os.path.lexists(aside):  # put the previous entry back
                    os.replace(aside, destination)
                raise
        for name in entries:
            try:
                found = _inventory(os.path.join(path, name))
            except OSError:
                found = (-1, -1, -1, -1)
            if found != counts[name]:
                raise OSError(
                    errno.EIO,
                    f"could not extract {file_path!r}: the entry {name!r} changed while it was "
                    f"moved into {path!r} (files, folders, links, bytes: expected "
                    f"{counts[name]}, found {found}); was it changed by another process?",
                )
        total = [sum(column) for column in zip(*counts.values(), strict=True)] or [0, 0, 0, 0]
        logger.info(
            "extracted %s: %d top-level entries, %d files, %d folders, %d links, %d bytes",
            file_path,
            len(entries),
            *total,
        )
        return entries
    except _DAMAGED as exc:
        raise ValueError(
            f"could not extract {file_path!r}: the archive is damaged or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from None
    finally:
        remove_tree(temp)
        remove_tree(trash)


def _call_format(fmt: ArchiveFormat, file_path: str, target: str, unsafe: str) -> bool:
    result = fmt(file_path, target, unsafe)
    if not isinstance(result, bool):
        raise TypeError(
            f"archive format {fmt!r} must return True (extracted) or False (not its format), "
            f"got {result!r}"
        )
    return result


def extract_archive(
    file_path: str | os.PathLike[str],
    path: str | os.PathLike[str] = ".",
    archive_format: Any = "auto",
    *,
    unsafe: Unsafe = "raise",
) -> bool:
    """Extract an archive if it matches a format (Keras's `extract_archive`), safely.

    Args:
        file_path: the archive.
        path: the folder to extract into (created when missing).
        archive_format: `'auto'` (`['tar', 'zip']`), `'tar'`, `'zip'`, a registered
            name, a callable, a list of those, or None (nothing matches).
        unsafe: `"raise"` (default) refuses the whole archive when a member could land
            outside `path` (`..`, absolute path, a write through a link, an escaping
            symbolic or hard link, a hard link to a missing or skipped member, a device
            file); `"skip"` leaves such members out with a warning.

    Returns:
        True when a format matched and the archive was extracted, else False.

    Raises:
        UnsafeArchiveError: an unsafe member with `unsafe="raise"`; nothing is written.
        ValueError: a damaged archive, or a bad `unsafe`.
        FileNotFoundError: `file_path` does not exist.
        OSError: a member the file system refuses (naming the member), or an extraction
            disturbed by another process.

    Examples:
        >>> import io, pathlib, tarfile, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = pathlib.Path(tmp)
        ...     with tarfile.open(folder / "data.tar.gz", "w:gz") as archive:
        ...         member = tarfile.TarInfo("data/hello.txt")
        ...         member.size = 5
        ...         archive.addfile(member, io.BytesIO(b"hello"))
        ...     extracted = extract_archive(folder / "data.tar.gz", folder / "out")
        ...     text = (folder / "out" / "data" / "hello.txt").read_text()
        >>> extracted, text
        (True, 'hello')
    """
    if unsafe not in ("raise", "skip"):
        raise ValueError(f"unsafe must be 'raise' or 'skip', got {unsafe!r}")
    file_path = os.fspath(file_path)
    if not os.path.isfile(file_path):
        raise FileNotFoundError(f"file_path={file_path!r}: no such archive")
    formats = resolve_archive_formats(archive_format)
    if not formats:
        return False
    return extract_to_folder(file_path, os.fspath(path), formats, unsafe) is not None
