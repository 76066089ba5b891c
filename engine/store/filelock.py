"""One daemon per SQLite file: an exclusive flock on `<database>.lock`, held while the
store is open (the kernel drops it when the process exits, however it exits)."""

from __future__ import annotations

import fcntl
import os


class DatabaseInUse(OSError):
    """Another process holds the database's lock (another daemon runs on it)."""


def hold_lock(database: str) -> int:
    """Take the lock of this database file; its file descriptor (close it to release)."""
    path = f"{database}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseInUse(
            f"another kaskad daemon is running on this database (it holds {path})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def release_lock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
