"""Writing files so that a reader, a crash or a kill never sees half of one (write a temporary sibling,
flush it, rename it over the target), and checksums to verify what is read back. One implementation
for results, caches and reports."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_with",
    "file_sha256",
    "remove_stale_temporaries",
    "temporary_dir",
]


def _file_mode() -> int:
    """0666 less the process umask: the mode open() would give a new file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()
_DIR_MODE = _FILE_MODE | ((_FILE_MODE & 0o444) >> 2)  # search permission wherever read is allowed
#: Suffix of every temporary file or folder augforge writes before renaming it into place.
TMP_SUFFIX = ".tmp"


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` with what ``write(file)`` writes, so that readers see either the old or the new
    file, never a mix. The temporary sibling is ``.<name>.<random>.tmp`` (what
    :func:`remove_stale_temporaries` recognises); the new file gets the mode ``open()`` would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        # mkstemp creates the file private (0600); results are ordinary files, readable as the umask allows.
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Persist the rename itself (directory entry); not possible on every platform.
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_write_with`)."""
    atomic_write_with(path, lambda f: f.write(data))


def temporary_dir(parent: Path, name: str) -> Path:
    """A new hidden folder ``.<name>.<random>.tmp`` in ``parent``, to be renamed into place when
    complete; its mode follows the umask like any folder (mkdtemp's own is private)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=TMP_SUFFIX, dir=parent))
    with contextlib.suppress(OSError):
        os.chmod(tmp, _DIR_MODE)
    return tmp


def remove_stale_temporaries(folder: Path, older_than_s: float = 3600.0) -> int:
    """Remove the temporaries a killed process left in ``folder`` and below (``.*.tmp`` files and
    folders from :func:`atomic_write_with` and :func:`temporary_dir`), if untouched for
    ``older_than_s`` seconds: a live writer's temporaries are younger. Returns how many went."""
    if not folder.is_dir():
        return 0
    now, gone = time.time(), 0
    for p in sorted(folder.rglob(f".*{TMP_SUFFIX}"), key=lambda q: len(q.parts), reverse=True):
        try:
            if now - p.lstat().st_mtime < older_than_s:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            gone += 1
        except OSError:
            continue  # gone already, or not ours to remove
    return gone


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex (about 1 GB/s)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
