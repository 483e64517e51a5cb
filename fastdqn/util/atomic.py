"""Durable, atomic file replacement shared by checkpoints, logs and the replay buffer: a crash
or ``kill -9`` at any moment leaves either the old file or the new one, never a torn one.
Imports nothing heavy (the replay buffer uses it).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then move the result onto ``path`` durably.

    Temporary files are named ``.<name>.<random>.tmp`` beside ``path``.

    A write that fails on a full disk (an ``OSError`` with ENOSPC or EDQUOT, or any error
    while the file system has less than ``FULL_BYTES`` free, as torch's writer reports it)
    raises ``OSError(ENOSPC)`` naming ``path`` and the free space; ``path`` is unchanged.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = isinstance(exc, Exception) and _disk_full(exc, path.parent)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            raise OSError(errno.ENOSPC, f"no space left to write {str(path)!r} ({free_bytes(path.parent) / 1e6:.1f} MB "
                                        f"free on its file system); any previous {path.name} is unchanged") from exc
        raise
    fsync_dir(path.parent)


FULL_BYTES = 1 << 20
"""Free bytes below which a failed write is taken for a full disk."""


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged process may still write in ``folder``'s file system."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


def _disk_full(exc: Exception, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return 0 <= free_bytes(folder) < FULL_BYTES


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
