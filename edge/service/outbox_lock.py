"""One daemon per outbox: an exclusive lock on ``<outbox>.lock``, which holds the owner's pid.

Two daemons on one outbox would publish the same rows twice and race on deleting them, and a
second process logging in with the device's credentials would take the first one's broker
session over (a broker that binds client ids to user names). ``edge check`` asks
`outbox_owner` instead of connecting a second time. The lock is ``flock(2)``: the kernel drops
it when the process dies, so a SIGKILLed daemon never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge.errors import BlastscopeError


class OutboxInUseError(BlastscopeError):
    """Another live process holds the outbox."""


def lock_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(outbox_path.name + ".lock")


class OutboxLock:
    """Held from acquire() until release() or the end of the process."""

    def __init__(self, outbox_path: Path) -> None:
        self.outbox_path = outbox_path
        self.path = lock_path(outbox_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            who = f"pid {owner}" if owner else "another process"
            raise OutboxInUseError(
                f"{self.outbox_path}: in use by another edge daemon ({who}); two daemons on one "
                "outbox would publish every result twice: stop it, or give this one its own "
                "outbox (outbox.path) and device id"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # a full disk: the lock holds without the pid in it
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def outbox_owner(outbox_path: Path) -> int | None:
    """The pid of the live process holding this outbox, or None; creates and writes nothing."""
    try:
        fd = os.open(lock_path(outbox_path), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
