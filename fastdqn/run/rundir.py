"""The run folder: where it may be, who owns it, and whether it already holds a run.

One process at a time owns a run folder: it holds an exclusive ``fcntl.flock`` on
``fastdqn.lock`` inside it for the whole run. The operating system drops the lock when
the process ends in any way (``kill -9`` included), so a stale lock never blocks
``--resume``. The lock file itself stays; it is not a run file. It is never removed:
removing it while another process waits on it would let two processes lock two
different files.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from fastdqn.run.checkpoint import CHECKPOINT_NAME
from fastdqn.errors import ConfigError
from fastdqn.run.logger import METRICS_NAME

LOCK_NAME = "fastdqn.lock"
# Files a run writes; one of them in a folder means a run was started there.
RUN_FILE_PATTERNS = (CHECKPOINT_NAME, METRICS_NAME, "config.json", "events.out.tfevents.*", "replay-*.bin")


def check_run_dir(path: Path) -> None:
    """Refuse, without creating anything, a run folder that could not be created or written.

    The path must not name a file, its nearest existing folder must be writable, and each
    new name must fit the file system's limits.
    """
    flag = "--run-dir"
    existing = path
    while not _exists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "is" if existing == path else f"has {str(existing)!r}, which is"
        raise ConfigError(f"{flag}: {str(path)!r} {what} a file, not a folder; choose another --run-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: no permission to write in {str(existing)!r}; choose another --run-dir")
    name_max = os.pathconf(existing, "PC_NAME_MAX")
    path_max = os.pathconf(existing, "PC_PATH_MAX")
    new_parts = path.absolute().relative_to(existing.absolute()).parts if existing != path else ()
    for part in (*new_parts, LOCK_NAME):
        if len(os.fsencode(part)) > name_max:
            raise ConfigError(f"{flag}: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes, longer "
                              f"than this file system allows ({name_max}); choose a shorter --run-dir")
    if len(os.fsencode(str(path.absolute() / CHECKPOINT_NAME))) >= path_max:
        raise ConfigError(f"{flag}: the path is longer than this system allows ({path_max} bytes); "
                          "choose a shorter --run-dir")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long: checked below
        return False


def run_files(path: Path) -> list[str]:
    """Names of the run files in ``path`` (empty if it does not exist)."""
    if not path.is_dir():
        return []
    return sorted({p.name for pattern in RUN_FILE_PATTERNS for p in path.glob(pattern)})


def check_no_run(path: Path) -> None:
    """Refuse a folder that holds run files: a run to resume, or a run that wrote no checkpoint."""
    files = run_files(path)
    if CHECKPOINT_NAME in files:
        raise ConfigError(f"--run-dir: {str(path)!r} already holds a run; pass --resume {path} "
                          "to continue it or choose another --run-dir")
    if files:
        raise ConfigError(f"--run-dir: {str(path)!r} holds files of a run that wrote no checkpoint "
                          f"({', '.join(files)}), so there is nothing to resume; delete them or choose "
                          "another --run-dir")


class RunDirLock:
    """Exclusive ownership of a run folder (created if missing) until ``release()`` or exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"--run-dir: cannot use {str(path)!r}: {exc.strerror}; "
                              "choose another --run-dir") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ConfigError(f"--run-dir: {str(path)!r} is in use by another fastdqn process; wait for it "
                              "to finish or stop it, or choose another --run-dir") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = -1
