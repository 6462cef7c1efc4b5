"""Atomic file output: write to a temporary name beside the target, then rename.

A crash or a full disk in the middle leaves either the old file or no file, never half of one.
Temporary files and folders are created owner-only; before the rename they get the permissions
an ordinary write under the user's umask would give (0644 and 0755 under umask 022), so outputs
can be shared and published.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux); else by
    setting and restoring it at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike) -> None:
    """Give a temporary file or folder the mode a plain ``open()`` or ``mkdir()`` would have."""
    mode = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, mode & ~current_umask())


def publish_tree(path: str | os.PathLike) -> None:
    """``publish_mode`` for a folder and everything in it (libraries such as safetensors write
    their files owner-only)."""
    path = Path(path)
    publish_mode(path)
    if path.is_dir():
        for item in path.rglob("*"):
            publish_mode(item)


def temporary_dir(parent: str | os.PathLike, prefix: str, suffix: str = ".tmp") -> Path:
    """A temporary folder in ``parent`` with ordinary permissions, to be renamed into place."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    publish_mode(folder)
    return folder


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line; a line is written in one call so readers never see half a record."""
    line = json.dumps(obj, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def save_file_atomic(save: Any, path: str | os.PathLike) -> None:
    """Call ``save(tmp_path)`` for a writer that wants a path (safetensors, torch.save)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
