"""The archive side's habits: its error survives pickling and DataLoader workers, the
built-in formats are module objects (not the user's custom objects), extraction is
logged through `logging.getLogger("kio")`, and warnings point at the caller's line."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _kio_helpers import FaultServer, Sandbox, tar_bytes, tar_link

import kio
import kregistry
from kio import UnsafeArchiveError, extract_archive, get_file


def unsafe_tar(box: Sandbox, name: str = "bad.tar") -> Path:
    archive = box.src / name
    archive.write_bytes(tar_bytes([("ok.txt", b"ok"), ("../escaped.txt", b"x")], mode="w"))
    return archive


def raised(archive: Path, out: Path) -> UnsafeArchiveError:
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, out)
    return info.value


def test_error_from_one_message(box: Sandbox) -> None:
    error = UnsafeArchiveError("refusing to extract 'x.tar': member 'y' is bad")
    assert str(error) == "refusing to extract 'x.tar': member 'y' is bad"
    assert isinstance(error, ValueError)
    assert (error.archive, error.member, error.reason) == (None, None, None)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is UnsafeArchiveError and str(copy) == str(error)


def test_error_pickles_with_its_attributes(box: Sandbox) -> None:
    error = raised(unsafe_tar(box), box.cache / "out")
    assert error.member == "../escaped.txt" and error.archive == str(box.src / "bad.tar")
    assert "\n" not in str(error) and "'../escaped.txt'" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is UnsafeArchiveError
    assert (copy.archive, copy.member, copy.reason, str(copy)) == (
        error.archive,
        error.member,
        error.reason,
        str(error),
    )
    # The three-argument form builds the same message.
    rebuilt = UnsafeArchiveError(error.archive or "", error.member, error.reason)
    assert str(rebuilt) == str(error)


class _ExtractingDataset:
    """Each item extracts an archive that is unsafe (in a DataLoader worker)."""

    def __init__(self, archive: str, out: str) -> None:
        self.archive = archive
        self.out = out

    def __len__(self) -> int:
        return 1  # one item: no second extraction is cut short when the loader stops

    def __getitem__(self, index: int) -> int:
        extract_archive(self.archive, self.out)
        return index


@pytest.mark.slow
def test_error_keeps_its_type_through_a_dataloader_worker(box: Sandbox) -> None:
    torch_data: Any = pytest.importorskip("torch.utils.data")
    archive = unsafe_tar(box)
    dataset: Any = _ExtractingDataset(str(archive), str(box.cache / "out"))
    loader = torch_data.DataLoader(dataset, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(UnsafeArchiveError) as info:
        list(loader)
    assert "../escaped.txt" in str(info.value)  # torch adds the worker's traceback
    assert os.listdir(box.cache / "out") == []


def test_builtin_formats_are_module_objects_not_custom_objects(box: Sandbox) -> None:
    archive = box.src / "a.tar"
    archive.write_bytes(tar_bytes([("a.txt", b"a")], mode="w"))
    objects = kregistry.get_custom_objects()
    assert not any(key.startswith("kio.archive>") for key in objects)
    with kregistry.custom_object_scope():
        objects.clear()  # the Keras idiom: the built-ins must survive it
        assert extract_archive(archive, box.cache / "out", archive_format="tar")
        assert extract_archive(archive, box.cache / "out", archive_format="auto")
        assert not extract_archive(archive, box.cache / "out", archive_format="zip")
        with pytest.raises(kregistry.UnknownObjectError, match="'tar'"):
            extract_archive(archive, box.cache / "out", archive_format="tra")
    assert (box.cache / "out" / "a.txt").read_bytes() == b"a"


def test_a_users_format_of_the_same_name_wins(box: Sandbox) -> None:
    archive = box.src / "a.tar"
    archive.write_bytes(tar_bytes([("a.txt", b"a")], mode="w"))
    calls: list[str] = []

    def my_tar(path: str, target: str, unsafe: str) -> bool:
        calls.append(path)
        Path(target, "mine.txt").write_text("mine")
        return True

    with kregistry.custom_object_scope():
        kregistry.register(package="kio.archive", name="tar")(my_tar)
        assert extract_archive(archive, box.cache / "out", archive_format="tar")
    assert calls == [str(archive)]
    assert os.listdir(box.cache / "out") == ["mine.txt"]
    assert "kio.archive>tar" not in kregistry.get_custom_objects()  # the scope ended
    assert extract_archive(archive, box.cache / "again", archive_format="tar")
    assert os.listdir(box.cache / "again") == ["a.txt"]


def test_extraction_is_logged(box: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    good = box.src / "good.tar"
    good.write_bytes(tar_bytes([("d/a.txt", b"aa"), ("d/b.txt", b"bbb")], mode="w"))
    with caplog.at_level(logging.DEBUG, logger="kio"):
        extract_archive(good, box.cache / "out")
    records = [r for r in caplog.records if r.name == "kio"]
    text = [r.getMessage() for r in records]
    assert any("extracting" in t and "good.tar" in t for t in text)
    assert any("2 files" in t and "5 bytes" in t for t in text)
    assert any("'d/a.txt'" in t for t in text if "member" in t)  # members at DEBUG
    assert all(r.levelno <= logging.INFO for r in records)
    caplog.clear()
    bad = unsafe_tar(box)
    with caplog.at_level(logging.INFO, logger="kio"), pytest.warns(UserWarning):
        extract_archive(bad, box.cache / "skip", unsafe="skip")
    # The skipped members are in one INFO record: the UserWarning already tells the user,
    # and a WARNING record would be printed a second time by logging's last resort.
    skipped = [r for r in caplog.records if r.name == "kio" and "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "'../escaped.txt'" in skipped[0].getMessage()
    assert skipped[0].levelno == logging.INFO


def test_warnings_point_at_the_callers_line(server: FaultServer, box: Sandbox) -> None:
    archive = unsafe_tar(box)
    with pytest.warns(UserWarning, match="skipping unsafe member") as record:
        extract_archive(archive, box.cache / "out", unsafe="skip")
    assert [w.filename for w in record] == [__file__]
    data = tar_bytes([tar_link("l", "/etc/passwd"), ("ok.txt", b"ok")])
    url = server.add("/links.tar.gz", data)
    with pytest.warns(UserWarning, match="skipping unsafe member") as record:
        get_file("links.tar.gz", url, extract=True, unsafe="skip", cache_dir=box.cache)
    assert [w.filename for w in record] == [__file__]
    url = server.add("/plain.bin", b"not an archive")
    with pytest.warns(UserWarning, match="not an archive") as record:
        get_file("plain.bin", url, extract=True, cache_dir=box.cache)
    assert [w.filename for w in record] == [__file__]


def test_the_public_names(box: Sandbox) -> None:
    assert kio.UnsafeArchiveError is UnsafeArchiveError
    assert "UnsafeArchiveError" in kio.__all__ and "extract_archive" in kio.__all__


def test_cli_reports_a_dangling_hard_link_in_one_line(box: Sandbox) -> None:
    archive = box.src / "dangling.tar"
    archive.write_bytes(tar_bytes([tar_link("hl", "nowhere", hard=True)], mode="w"))
    result = subprocess.run(
        [sys.executable, "-m", "kio", archive.as_uri(), "--extract", "--cache-dir", str(box.cache)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "'hl'" in lines[0] and "'nowhere'" in lines[0]
    box.known["dangling.tar"].append(archive.read_bytes())
