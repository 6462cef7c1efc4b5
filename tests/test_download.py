"""Downloads and extraction against a local HTTP server on 127.0.0.1 (``server`` in conftest):
resume, checksums, locks, mirrors, and archives that try to write outside their folder."""

from __future__ import annotations

import errno
import random
import threading
import zipfile
from pathlib import Path

import pytest

import bertfit.data.download as dl
from bertfit.errors import DataError
from tests.conftest import sha, tar_bytes, zip_bytes

CORPUS = {"SST-2/train.tsv": b"sentence\tlabel\ngreat film\t1\n", "SST-2/dev.tsv": b"x\t0\n"}
BIG = bytes(range(256)) * 400  # 100 KiB: more than one read chunk


def test_download_verify_extract_then_cached(server, tmp_path):
    data = zip_bytes(CORPUS)
    server.files["/SST-2.zip"] = data
    dest = tmp_path / "cache" / "SST-2.zip"

    got = dl.download(server.url("/SST-2.zip"), dest, sha(data).upper(), progress=False)
    assert got == dest and dest.read_bytes() == data
    assert not dest.with_name("SST-2.zip.part").exists()
    target = dl.extract(dest, tmp_path / "cache" / "SST-2")
    assert (target / "SST-2" / "train.tsv").read_bytes() == CORPUS["SST-2/train.tsv"]

    before = len(server.requests)
    assert dl.download(server.url("/SST-2.zip"), dest, sha(data), progress=False) == dest
    assert dl.extract(dest, target) == target
    assert len(server.requests) == before  # the second run fetches nothing
    assert [p.name for p in tmp_path.joinpath("cache").iterdir() if p.name.startswith(".")] == []


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/a.bin"] = BIG
    dest = tmp_path / "a.bin"
    with pytest.raises(DataError, match="checksum mismatch: expected sha256 0+, got"):
        dl.download(server.url("/a.bin"), dest, "0" * 64, progress=False)
    assert not dest.exists()
    assert not dest.with_name("a.bin.part").exists()


def test_cached_file_with_wrong_checksum_is_fetched_again(server, tmp_path):
    server.files["/a.bin"] = BIG
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"stale")
    dl.download(server.url("/a.bin"), dest, sha(BIG), progress=False)
    assert dest.read_bytes() == BIG
    assert server.bodies("/a.bin") == 1


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.files["/a.bin"] = BIG
    server.cut_after["/a.bin"] = 30_000
    dest = tmp_path / "a.bin"
    part = tmp_path / "a.bin.part"

    with pytest.raises(DataError) as info:
        dl.download(server.url("/a.bin"), dest, sha(BIG), progress=False)
    message = str(info.value)
    assert message.startswith(f"cannot download {server.url('/a.bin')}: ")
    assert "run again to resume" in message and "\n" not in message
    assert part.read_bytes() == BIG[:30_000]
    assert not dest.exists()

    dl.download(server.url("/a.bin"), dest, sha(BIG), progress=False)
    assert server.requests[-1] == ("/a.bin", "bytes=30000-")
    assert dest.read_bytes() == BIG
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["/a.bin"] = BIG
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(BIG[:1000])
    dest = dl.download(server.url("/a.bin"), tmp_path / "a.bin", sha(BIG), progress=False)
    assert server.requests == [("/a.bin", "bytes=1000-")]
    assert dest.read_bytes() == BIG


def test_complete_part_answered_416_is_verified(server, tmp_path):
    server.files["/a.bin"] = BIG
    (tmp_path / "a.bin.part").write_bytes(BIG)
    dest = dl.download(server.url("/a.bin"), tmp_path / "a.bin", sha(BIG), progress=False)
    assert dest.read_bytes() == BIG
    assert server.requests == [("/a.bin", f"bytes={len(BIG)}-")]


def test_http_error_and_unreachable_host(server, tmp_path):
    with pytest.raises(DataError, match=r"cannot download .*/missing.zip: HTTP 404"):
        dl.download(server.url("/missing.zip"), tmp_path / "m.zip", None, progress=False)
    port = server.httpd.server_address[1]
    server.httpd.server_close()  # nothing listens any more
    with pytest.raises(DataError, match="cannot download .*; run again to retry"):
        dl.download(f"http://127.0.0.1:{port}/x", tmp_path / "x", None, progress=False)
    assert not (tmp_path / "x.part").exists()


def test_mirror_rewrites_url(server, tmp_path, monkeypatch):
    assert dl.mirror_url("https://example.org/a/b.zip") == "https://example.org/a/b.zip"
    monkeypatch.setenv(dl.MIRROR_ENV, server.url("/corpora"))  # no trailing slash
    assert dl.mirror_url("https://example.org/a/b.zip?dl=1") == server.url("/corpora/b.zip")

    server.files["/corpora/SST-2.zip"] = BIG
    dest = tmp_path / "SST-2.zip"
    dl.download("https://example.invalid/glue/SST-2.zip?raw=1", dest, sha(BIG), progress=False)
    assert server.requests == [("/corpora/SST-2.zip", None)]
    assert dest.read_bytes() == BIG


def test_concurrent_downloads_fetch_once(server, tmp_path):
    server.files["/a.bin"] = BIG
    server.delay = 0.3  # the second thread arrives while the first holds the lock
    dest = tmp_path / "a.bin"
    results: list[object] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(dl.download(server.url("/a.bin"), dest, sha(BIG), progress=False))
        except Exception as err:  # surfaced by the assert below
            results.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [dest, dest]
    assert dest.read_bytes() == BIG
    assert server.bodies("/a.bin") == 1


@pytest.mark.parametrize(
    "name, data",
    [
        ("c.zip", zip_bytes(CORPUS)),
        ("c.tar.gz", tar_bytes(CORPUS)),
        ("c.tgz", tar_bytes(CORPUS)),
        ("c.tar", tar_bytes(CORPUS, "w")),
        ("c.tar.bz2", tar_bytes(CORPUS, "w:bz2")),
        ("c.bin", tar_bytes(CORPUS)),  # detected by content, not by name
    ],
)
def test_extract_formats(tmp_path, name, data):
    archive = tmp_path / name
    archive.write_bytes(data)
    target = dl.extract(archive, tmp_path / "out" / "SST-2")
    assert (target / "SST-2" / "dev.tsv").read_bytes() == CORPUS["SST-2/dev.tsv"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["SST-2"]  # no temp folder left


@pytest.mark.parametrize("evil", ["../evil", "ok/../../evil", "/abs"])
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_extract_refuses_paths_outside_target(tmp_path, evil, kind):
    members = {"SST-2/train.tsv": b"fine\n", evil: b"boom\n"}
    archive = tmp_path / f"bad.{kind}"
    archive.write_bytes(zip_bytes(members) if kind == "zip" else tar_bytes(members))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match=rf"{archive.name}: refusing to extract member '{evil}'"):
        dl.extract(archive, out / "corpus")
    assert list(out.iterdir()) == []  # not even the good member, nor a temp folder
    assert not (tmp_path / "evil").exists()


def test_extract_refuses_tar_symlink(tmp_path):
    archive = tmp_path / "link.tar.gz"
    archive.write_bytes(tar_bytes({"a.txt": b"a"}, symlink="passwd"))
    with pytest.raises(DataError, match=r"refusing to extract member 'passwd' \(link to"):
        dl.extract(archive, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [archive]


def test_failure_midway_leaves_no_target(tmp_path, monkeypatch):
    archive = tmp_path / "c.zip"
    archive.write_bytes(zip_bytes(CORPUS))
    real_extract = zipfile.ZipFile.extract
    calls = []

    def failing_extract(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", failing_extract)
    with pytest.raises(OSError, match="No space left"):
        dl.extract(archive, tmp_path / "corpus")
    assert list(tmp_path.iterdir()) == [archive]

    monkeypatch.undo()
    assert (dl.extract(archive, tmp_path / "corpus") / "SST-2" / "train.tsv").exists()


@pytest.mark.parametrize(
    "name, data",
    [
        ("d.zip", b"PK\x03\x04 not really a zip"),
        ("d.tar.gz", tar_bytes({"a.txt": random.Random(0).randbytes(50_000)})[:20_000]),
        ("d.tar.bz2", b"BZh91AY&SY garbage"),
    ],
)
def test_damaged_archive(tmp_path, name, data):
    archive = tmp_path / name
    archive.write_bytes(data)
    with pytest.raises(
        DataError, match=r"damaged archive \(.*\); delete it and download again$"
    ) as info:
        dl.extract(archive, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == [archive]


def test_unsupported_or_missing_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a supported archive"):
        dl.extract(tmp_path / "notes.txt", tmp_path / "out")
    with pytest.raises(DataError, match="no such archive"):
        dl.extract(tmp_path / "gone.zip", tmp_path / "out")


def test_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTFIT_CACHE", str(tmp_path / "env"))
    assert dl.cache_root(tmp_path / "flag") == tmp_path / "flag"
    assert dl.cache_root() == tmp_path / "env"
    monkeypatch.delenv("BERTFIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.cache_root() == tmp_path / "xdg" / "bertfit"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.cache_root() == tmp_path / "home" / ".cache" / "bertfit"


def test_verify_and_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert dl.sha256_file(path) == sha(b"abc")
    dl.verify(path, sha(b"abc"))
    dl.verify(path, None)
    with pytest.raises(DataError, match=rf"^{path}: checksum mismatch: expected sha256 1+, got "):
        dl.verify(Path(path), "1" * 64)
