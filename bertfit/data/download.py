"""Verified downloads and safe extraction for named corpora.

``download`` fetches a URL into the cache once: it writes ``dest.part``, resumes it with an HTTP
``Range`` request after an interruption, checks the SHA-256 and only then renames it to ``dest``,
all under a file lock so two processes never fetch the same file at once. ``extract`` unpacks
into a temporary folder beside the target and renames it into place, after refusing any member
that could write outside it. Either step leaves a finished file or folder, or nothing.

Set ``BERTFIT_DATA_MIRROR`` to a base URL (``http://host/corpora/`` or ``file:///data/corpora/``)
to fetch every file by name from there instead of its origin.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

from filelock import FileLock
from tqdm.auto import tqdm

from bertfit.errors import DataError
from bertfit.files import temporary_dir

MIRROR_ENV = "BERTFIT_DATA_MIRROR"
CHUNK = 1 << 16
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2")
# Everything a damaged or truncated archive raises somewhere in zipfile/tarfile/gzip/bz2/zlib.
DAMAGED = (
    zipfile.BadZipFile,
    tarfile.ReadError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
)
# tarfile.FilterError arrived with the extraction filters (3.12, backported to 3.10.12/3.11.4).
FILTER_ERROR = getattr(tarfile, "FilterError", ())


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given (``--cache-dir``), else ``$BERTFIT_CACHE``,
    else ``$XDG_CACHE_HOME/bertfit``, else ``~/.cache/bertfit`` (the rule packing uses).

    >>> cache_root("/tmp/c")
    PosixPath('/tmp/c')
    """
    if cache_dir:
        return Path(cache_dir).expanduser()
    root = os.environ.get("BERTFIT_CACHE") or os.path.join(
        # An empty XDG_CACHE_HOME means unset (XDG spec), not "the current directory".
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "bertfit",
    )
    return Path(root).expanduser()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks so a large corpus never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None) -> None:
    """Raise :class:`DataError` unless ``path`` hashes to ``sha256``; ``None`` checks nothing."""
    actual = _mismatch(path, sha256)
    if actual is not None:
        raise DataError(
            f"{path}: checksum mismatch: expected sha256 {sha256}, got {actual}; the file is "
            "damaged or has changed at its source: delete it and download again"
        )


def mirror_url(url: str) -> str:
    """``url`` rewritten to ``$BERTFIT_DATA_MIRROR`` + its file name, or ``url`` if unset.

    >>> os.environ[MIRROR_ENV] = "http://127.0.0.1:8000/corpora/"
    >>> mirror_url("https://example.org/data/SST-2.zip?dl=1")
    'http://127.0.0.1:8000/corpora/SST-2.zip'
    >>> del os.environ[MIRROR_ENV]
    """
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return url
    name = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return base.rstrip("/") + "/" + name


def download(
    url: str, dest: Path, sha256: str | None, *, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Fetch ``url`` (or its mirror) to ``dest`` once, verified; return ``dest``.

    An existing ``dest`` that passes the checksum is returned without touching the network; one
    that fails it is fetched again. An interrupted transfer keeps ``dest.part`` and the next call
    resumes it. A wrong checksum after the transfer deletes the download and raises DataError.

    >>> url = "https://example.org/SST-2.zip"
    >>> download(url, cache_root() / "SST-2.zip", "9f1c...")  # doctest: +SKIP
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    # The lock makes a second process wait here, then find the finished file below.
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            if _mismatch(dest, sha256) is None:
                return dest
            dest.unlink()
        source = mirror_url(url)
        where = source if source == url else f"{source} ({MIRROR_ENV} for {url})"
        _transfer(source, part, where, progress=progress, timeout=timeout)
        actual = _mismatch(part, sha256)
        if actual is not None:
            # A complete file with the wrong hash cannot be resumed into a right one.
            part.unlink()
            raise DataError(
                f"cannot download {where}: checksum mismatch: expected sha256 {sha256}, got "
                f"{actual}; deleted the download. Run again to retry; if the source changed on "
                "purpose, update the expected checksum"
            )
        os.replace(part, dest)
    return dest


def extract(archive: Path, target: Path) -> Path:
    """Unpack a .zip, .tar, .tar.gz/.tgz or .tar.bz2 into the folder ``target``; return it.

    An existing ``target`` folder counts as already extracted. Members with an absolute path,
    a ``..`` component, or (tar) a link or device are refused before anything is written.

    >>> extract(cache_root() / "SST-2.zip", cache_root() / "SST-2")  # doctest: +SKIP
    """
    archive, target = Path(archive), Path(target)
    if target.is_dir():
        return target
    if target.exists():
        raise DataError(
            f"{target}: exists and is not a folder; remove it so {archive} can be extracted"
        )
    if not archive.is_file():
        raise DataError(f"{archive}: no such archive; download it first")
    try:
        if _archive_kind(archive) == "zip":
            _extract_zip(archive, target)
        else:
            _extract_tar(archive, target)
    except FILTER_ERROR as err:
        raise _refusal(archive, err.tarinfo.name, str(err)) from err
    except DAMAGED as err:
        raise _damaged(archive, err) from err
    except OSError as err:
        # bz2 reports a corrupt stream as a bare OSError; disk errors keep their own message.
        if err.errno is None:
            raise _damaged(archive, err) from err
        raise
    return target


def _mismatch(path: Path, sha256: str | None) -> str | None:
    """The actual digest when it differs from ``sha256``, else None."""
    if sha256 is None:
        return None
    actual = sha256_file(path)
    return None if actual == sha256.strip().lower() else actual


def _transfer(source: str, part: Path, where: str, *, progress: bool, timeout: float) -> None:
    """Bring ``part`` up to the full remote file, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(source, headers={"User-Agent": "bertfit"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        with err:
            total = _content_range(err.headers.get("Content-Range"))[2]
        if err.code == 416 and offset:
            if total in (None, offset):
                return  # the .part already holds the whole file; the caller verifies it
            part.unlink()  # longer than the remote file: it cannot be a prefix of it
            return _transfer(source, part, where, progress=progress, timeout=timeout)
        raise DataError(f"cannot download {where}: HTTP {err.code} {err.reason}") from err
    except ValueError as err:  # a malformed URL or mirror base
        raise DataError(f"cannot download {where}: {err}") from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _network_error(where, part, err) from err

    with response:
        start, end, total = _content_range(response.headers.get("Content-Range"))
        if response.status == 206 and start != offset:
            part.unlink()
            raise DataError(
                f"cannot download {where}: asked for bytes from {offset}, the server sent them "
                f"from {start}; deleted the partial file, run again to download from the start"
            )
        if response.status != 206:  # 200 (Range ignored) or file://: start over
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        elif total is None and end is not None:
            total = end + 1
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
            file=sys.stderr,
        )
        try:
            with bar, open(part, "ab" if offset else "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            # http.client's read(n) returns b"" on an early close instead of raising (< 3.13).
            if total is not None and part.stat().st_size < total:
                raise http.client.IncompleteRead(b"", total - part.stat().st_size)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            raise _network_error(where, part, err) from err


def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """(start, end, total) from ``bytes 100-199/200`` or ``bytes */200``; None where absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", header or "")
    if not match:
        return None, None, None
    start, end, total = (int(g) if g and g.isdigit() else None for g in match.groups())
    return start, end, total


def _network_error(where: str, part: Path, err: BaseException) -> DataError:
    if isinstance(err, http.client.IncompleteRead):
        reason = "the connection closed before the end of the file"
    else:
        reason = getattr(err, "reason", None) or str(err) or type(err).__name__
    kept = part.stat().st_size if part.exists() else 0
    tail = (
        f"; kept the {kept} bytes received in {part}: run again to resume"
        if kept
        else "; run again to retry"
    )
    return DataError(f"cannot download {where}: {reason}{tail}")


def _archive_kind(archive: Path) -> str:
    """ "zip" or "tar", by content where it can be read, else by name."""
    if zipfile.is_zipfile(archive):
        return "zip"
    with contextlib.suppress(*DAMAGED, OSError):
        if tarfile.is_tarfile(archive):
            return "tar"
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"  # opening it reports the damage
    if name.endswith(ARCHIVE_SUFFIXES):
        return "tar"
    raise DataError(
        f"{archive}: not a supported archive; expected one of {', '.join(ARCHIVE_SUFFIXES)}"
    )


def _damaged(archive: Path, err: BaseException) -> DataError:
    reason = " ".join(str(err).split())  # tarfile's "r:*" lists every method on its own line
    return DataError(f"{archive}: damaged archive ({reason}); delete it and download again")


def _unsafe_reason(name: str) -> str | None:
    """Why a member name could write outside the target folder, or None."""
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "'..' path component"
    return None


def _refusal(archive: Path, member: str, why: str) -> DataError:
    return DataError(
        f"{archive}: refusing to extract member {member!r} ({why}); nothing was extracted. "
        "The archive is damaged or unsafe: check its source"
    )


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:  # check every member before writing any
            why = _unsafe_reason(info.filename)
            if why:
                raise _refusal(archive, info.filename, why)
        with _staging(target) as tmp:
            for info in members:
                zf.extract(info, tmp)


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()  # reads the whole archive: damage shows before any write
        for member in members:
            why = _unsafe_reason(member.name)
            if not why and (member.issym() or member.islnk()):
                why = f"link to {member.linkname!r}"
            elif not why and (member.isdev() or not (member.isfile() or member.isdir())):
                why = "device or special file"
            if why:
                raise _refusal(archive, member.name, why)
        # The "data" filter is a second fence (and drops setuid bits) where Python has it.
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        with _staging(target) as tmp:
            tf.extractall(tmp, members=members, **kwargs)


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target``, renamed to it on success and removed on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same parent, so the final rename is atomic: target is absent or complete, never half.
    tmp = temporary_dir(target.parent, f".{target.name}.")
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp)  # another process finished the same extraction first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
