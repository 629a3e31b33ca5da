"""Crash-safe file writing: write to a temporary name, fsync, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import CharRNNError


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    If the block raises (or the process dies), ``path`` is left untouched and the
    temporary file is removed (or, after a hard kill, left under a hidden ``.tmp`` name).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise CharRNNError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise CharRNNError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing that atomically becomes ``path`` on success."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f
        f.flush()


def check_readable_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable regular file, else raise CharRNNError."""
    p = Path(path)
    if not p.exists():
        raise CharRNNError(f"{what} not found: {p}")
    if p.is_dir():
        raise CharRNNError(f"{what} is a directory, not a file: {p}")
    if not os.access(p, os.R_OK):
        raise CharRNNError(f"{what} is not readable (permission denied): {p}")
    return p
