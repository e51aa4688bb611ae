"""get_file: Keras 2's arguments, cache layout and return values, plus Keras 3's extras."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import pytest
from _kio_helpers import FaultServer, Sandbox, make_tar, payload, sha256

import kio
import kregistry
from kio import get_file


def test_layout_and_cache_hit(server: FaultServer, box: Sandbox) -> None:
    data = payload(10_000)
    url = server.add("/files/data.bin", data)
    path = get_file("data.bin", url, cache_dir=str(box.cache))
    assert path == os.path.join(str(box.cache), "datasets", "data.bin")
    assert Path(path).read_bytes() == data
    assert get_file("data.bin", url, cache_dir=box.cache) == path
    assert len(server.hits("/files/data.bin")) == 1  # not downloaded again


def test_cache_subdir_and_absolute_paths(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/a.txt", b"alpha")
    sub = get_file("a.txt", url, cache_subdir="models", cache_dir=box.cache)
    assert sub == os.path.join(str(box.cache), "models", "a.txt")
    nested = get_file("a.txt", url, cache_subdir="models/v1", cache_dir=box.cache)
    assert nested == os.path.join(str(box.cache), "models", "v1", "a.txt")
    # Keras wrote wherever an absolute path pointed; kio never leaves the cache.
    with pytest.raises(ValueError, match="cache_subdir"):
        get_file("a.txt", url, cache_subdir=str(box.root / "elsewhere"), cache_dir=box.cache)
    with pytest.raises(ValueError, match="fname"):
        get_file(str(box.root / "abs" / "a.txt"), url, cache_dir=box.cache)
    assert len(server.hits("/a.txt")) == 2
    box.known["a.txt"].append(b"alpha")


def test_fname_none_takes_the_url_name(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/dir/my%20file.csv", b"a,b\n")
    path = get_file(origin=url + "?token=x", cache_dir=box.cache)
    assert os.path.basename(path) == "my file.csv"
    for bad in ("/dir/", "/dir/%2E%2E", "/dir/.."):
        with pytest.raises(ValueError, match="fname"):
            get_file(origin=server.url(bad), cache_dir=box.cache)


def test_bad_arguments(box: Sandbox) -> None:
    with pytest.raises(ValueError, match="origin"):
        get_file("x")
    with pytest.raises(ValueError, match="ftp://h/x"):
        get_file("x", "ftp://h/x", cache_dir=box.cache)
    with pytest.raises(TypeError, match="origin"):
        get_file("x", 42, cache_dir=box.cache)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fname"):
        get_file(3.5, "http://127.0.0.1:1/x", cache_dir=box.cache)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries"):
        get_file("x", "http://127.0.0.1:1/x", cache_dir=box.cache, retries=-1)
    with pytest.raises(ValueError, match="unsafe"):
        get_file("x", "http://127.0.0.1:1/x", cache_dir=box.cache, unsafe="maybe")  # type: ignore[arg-type]
    with pytest.raises(kregistry.UnknownObjectError, match="sha256"):
        get_file("x", "http://127.0.0.1:1/x", file_hash="0" * 64, hash_algorithm="sha265")
    assert not box.cache.exists() or not any(box.cache.rglob("x"))


def test_default_cache_root_env_and_home(
    server: FaultServer, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add("/d.txt", b"d")
    box.home_may_hold.add(".keras")
    assert kio.default_cache_dir() == os.path.join(str(box.home), ".keras")
    assert get_file("d.txt", url) == os.path.join(str(box.home), ".keras", "datasets", "d.txt")
    monkeypatch.setenv("KERAS_HOME", str(box.cache / "keras_home"))
    assert get_file("d.txt", url).startswith(str(box.cache / "keras_home"))
    monkeypatch.setenv("KIO_HOME", str(box.cache / "kio_home"))
    assert kio.default_cache_dir() == str(box.cache / "kio_home")
    assert get_file("d.txt", url) == str(box.cache / "kio_home" / "datasets" / "d.txt")


def test_unwritable_cache_dir_is_an_error(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/u.txt", b"u")
    blocker = box.cache
    blocker.parent.mkdir(exist_ok=True)
    blocker.write_bytes(b"a file where a folder should be")
    with pytest.raises(PermissionError, match="cache_dir"):
        get_file("u.txt", url, cache_dir=blocker / "sub")
    assert server.hits("/u.txt") == []
    blocker.unlink()


def test_hash_auto_md5_sha256_and_others(server: FaultServer, box: Sandbox) -> None:
    data = payload(3000, seed=1)
    url = server.add("/h.bin", data)
    md5 = hashlib.md5(data).hexdigest()
    for algorithm, digest in [
        ("auto", sha256(data)),
        ("auto", md5),
        ("sha256", sha256(data).upper()),
        ("SHA512", hashlib.sha512(data).hexdigest()),
        ("auto", hashlib.sha1(data).hexdigest()),
    ]:
        path = get_file(
            "h.bin", url, file_hash=digest, hash_algorithm=algorithm, cache_dir=box.cache
        )
        assert kio.validate_file(path, digest, algorithm)
    assert kio.hash_file(path, "md5") == md5
    assert len(server.hits("/h.bin")) == 1


def test_md5_hash_and_untar_deprecated_aliases(server: FaultServer, box: Sandbox) -> None:
    archive = make_tar(str(box.src / "pack.tar.gz"), [("pack/readme.txt", b"hello")])
    data = Path(archive).read_bytes()
    url = server.add("/pack.tar.gz", data)
    with pytest.warns(DeprecationWarning, match="md5_hash"):
        path = get_file(
            "plain.bin", url, md5_hash=hashlib.md5(data).hexdigest(), cache_dir=box.cache
        )
    assert Path(path).read_bytes() == data
    with pytest.warns(DeprecationWarning, match="md5_hash"), pytest.raises(ValueError, match="md5"):
        get_file("bad.bin", url, md5_hash="0" * 32, cache_dir=box.cache)
    with pytest.warns(DeprecationWarning, match="untar"):
        folder = get_file("pack", url, untar=True, cache_dir=box.cache)
    # Keras 2: saved as fname + ".tar.gz", extracted beside it, returns cache/fname.
    assert folder == os.path.join(str(box.cache), "datasets", "pack")
    assert os.path.isfile(folder + ".tar.gz")
    assert Path(os.path.join(folder, "readme.txt")).read_bytes() == b"hello"
    box.known["pack.tar.gz"].append(data)


def test_untar_with_absolute_fname_and_extract_with_folders(
    server: FaultServer, box: Sandbox
) -> None:
    archive = make_tar(str(box.src / "pk.tar.gz"), [("pk/readme.txt", b"hi")])
    data = Path(archive).read_bytes()
    url = server.add("/pk.tar.gz", data)
    box.known["pk.tar.gz"].append(data)
    with pytest.warns(DeprecationWarning, match="untar"):
        folder = get_file("deep/pk", url, untar=True, cache_dir=box.cache)
    assert folder == os.path.join(str(box.cache), "datasets", "deep", "pk")
    assert Path(folder, "readme.txt").read_bytes() == b"hi"
    assert os.path.isfile(folder + ".tar.gz")
    nested = get_file("sub/x.tar.gz", url, extract=True, cache_dir=box.cache)
    assert nested == os.path.join(str(box.cache), "datasets", "sub", "x.tar.gz")
    assert (box.cache / "datasets" / "sub" / "pk" / "readme.txt").read_bytes() == b"hi"
    box.known["x.tar.gz"].append(data)


def test_user_registered_hash_algorithm(server: FaultServer, box: Sandbox) -> None:
    data = b"custom hashing"

    @kregistry.register(name="blake2b", package="kio.hash")
    def blake2b() -> hashlib._Hash:
        return hashlib.blake2b(digest_size=16)

    url = server.add("/c.bin", data)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    assert get_file("c.bin", url, file_hash=digest, hash_algorithm="blake2b", cache_dir=box.cache)
    with kregistry.custom_object_scope({"mine": blake2b}):
        assert get_file("c.bin", url, file_hash=digest, hash_algorithm="mine", cache_dir=box.cache)


def test_mismatch_after_download_removes_file(server: FaultServer, box: Sandbox) -> None:
    data = payload(5000, seed=2)
    url = server.add("/m.bin", data)
    wrong = "f" * 64
    with pytest.raises(ValueError) as info:
        get_file("m.bin", url, file_hash=wrong, cache_dir=box.cache)
    message = str(info.value)
    assert url in message and wrong in message and sha256(data) in message
    folder = box.cache / "datasets"
    assert not (folder / "m.bin").exists()
    assert not (folder / ".kio" / "m.bin.part").exists()


def test_cached_file_with_wrong_hash_is_downloaded_again(server: FaultServer, box: Sandbox) -> None:
    data = payload(4000, seed=3)
    url = server.add("/w.bin", data)
    folder = box.cache / "datasets"
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"stale")
    with pytest.warns(UserWarning, match="downloading it again"):
        path = get_file("w.bin", url, file_hash=sha256(data), cache_dir=box.cache)
    assert Path(path).read_bytes() == data
    # Without a hash, Keras serves whatever is cached.
    (folder / "x.bin").write_bytes(b"mine")
    assert Path(get_file("x.bin", url, cache_dir=box.cache)).read_bytes() == b"mine"
    box.known["x.bin"].append(b"mine")


def test_verified_hash_is_remembered(
    server: FaultServer, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(200_000, seed=4)
    url = server.add("/big.bin", data)
    digest = sha256(data)
    path = get_file("big.bin", url, file_hash=digest, cache_dir=box.cache)
    import kio._get_file as impl

    real_hash_file = impl.hash_file
    reads: list[str] = []

    def counting(*args: object, **kwargs: object) -> str:
        reads.append(str(args[0]))
        return real_hash_file(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(impl, "hash_file", counting)
    for _ in range(3):
        assert get_file("big.bin", url, file_hash=digest, cache_dir=box.cache) == path
    assert reads == []  # served from the memo: size, mtime and inode unchanged
    # Same size, new content, and the old mtime put back with os.utime (as rsync -t or
    # a careless tool would): the change time still differs, so the file is hashed
    # again, found wrong, and downloaded again.
    before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"X")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    with pytest.warns(UserWarning, match="downloading it again"):
        get_file("big.bin", url, file_hash=digest, cache_dir=box.cache)
    assert reads == [path]
    assert Path(path).read_bytes() == data
    assert len(server.hits("/big.bin")) == 2


def test_force_download(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/f.txt", b"one")
    path = get_file("f.txt", url, cache_dir=box.cache)
    server.add("/f.txt", b"two")
    assert Path(get_file("f.txt", url, cache_dir=box.cache)).read_bytes() == b"one"
    assert get_file("f.txt", url, cache_dir=box.cache, force_download=True) == path
    assert Path(path).read_bytes() == b"two"


def test_progress_bar_when_asked(
    server: FaultServer, box: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.add("/p.bin", payload(300_000))
    get_file("p.bin", url, cache_dir=box.cache, progress=True)
    err = capsys.readouterr().err
    assert "p.bin" in err and "100%" in err
    get_file("q.bin", url, cache_dir=box.cache)  # stderr is not a terminal: silent
    assert capsys.readouterr().err == ""
    box.known["q.bin"].append(payload(300_000))


def test_no_warnings_on_plain_hit(server: FaultServer, box: Sandbox) -> None:
    url = server.add("/n.txt", b"n")
    get_file("n.txt", url, cache_dir=box.cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_file("n.txt", url, cache_dir=box.cache)


def test_hash_builtins_are_module_objects_not_custom_objects(
    server: FaultServer, box: Sandbox
) -> None:
    from kio._hashing import BUILTINS, resolve_hash_algorithm

    objects = kregistry.get_custom_objects()
    assert not any(key.startswith("kio.hash>") for key in objects)
    # The Keras idiom that empties the user's registry leaves kio's built-ins working.
    kregistry.get_custom_objects().clear()
    for name in ("md5", "sha1", "sha256", "sha512"):
        assert resolve_hash_algorithm(name) is BUILTINS[name]
    data = b"built-in hashes"
    url = server.add("/bh.bin", data)
    assert get_file("bh.bin", url, file_hash=sha256(data), cache_dir=box.cache)
    assert kio.validate_file(box.cache / "datasets" / "bh.bin", "md5:" + _md5(data))

    # A user's registered object of a built-in's name wins over the built-in.
    calls: list[int] = []

    @kregistry.register(package="kio.hash", name="sha256")
    def counting_sha256() -> hashlib._Hash:
        calls.append(1)
        return hashlib.sha256()

    assert resolve_hash_algorithm("sha256") is counting_sha256
    assert kio.validate_file(box.cache / "datasets" / "bh.bin", sha256(data), "sha256")
    assert calls
    with pytest.raises(kregistry.UnknownObjectError, match="sha256"):
        resolve_hash_algorithm("sha265")
    with pytest.raises(TypeError, match="hash algorithm"):
        kio.hash_file(__file__, 42)
    with pytest.raises(ValueError, match="chunk_size"):
        kio.hash_file(__file__, "md5", chunk_size=0)
    assert kio.hash_file(__file__, "md5", chunk_size=7) == kio.hash_file(__file__, "md5")
    with pytest.raises(ValueError, match="3 hex digits but md5 digests have 32"):
        kio.validate_file(__file__, "md5:abc")
    with pytest.raises(TypeError, match="chunk_size"):
        kio.hash_file(__file__, "md5", chunk_size=2.5)  # type: ignore[arg-type]


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_importing_kio_pulls_in_neither_torch_nor_numpy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kio, kio.__main__\n"
        "kio.get_file  # the whole package imported\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
