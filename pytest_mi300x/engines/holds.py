"""A session's hold on the cached engine build it uses, so that no eviction removes it.

A hold is a shared ``flock`` on ``<engines>/<build>.hold``: any number of sessions hold a
build at once, and the kernel drops a hold when its process dies (a PID file would outlive
a SIGKILL). Eviction takes the lock exclusively without waiting: a build it cannot lock is
in use. The descriptor is not inherited by the servers a session starts (PEP 446), so a
hold ends with its session.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

HOLD_SUFFIX = ".hold"


def hold_path(venv: Path) -> Path:
    return venv.with_name(venv.name + HOLD_SUFFIX)


def _open(venv: Path) -> int:
    # Read-only is enough for flock: another user's hold file locks as well as ours.
    return os.open(hold_path(venv), os.O_RDONLY | os.O_CREAT, 0o666)


class BuildHold:
    """Context manager: this process uses the build at ``venv`` until it leaves (or dies)."""

    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self._fd: int | None = None

    def acquire(self) -> BuildHold:
        if self._fd is None:
            fd = _open(self.venv)
            try:
                # Waits only while an eviction or a listing has it exclusively: an evictor
                # also holds the install lock, which a session takes before its hold.
                fcntl.flock(fd, fcntl.LOCK_SH)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> BuildHold:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


@contextmanager
def unheld(venv: Path) -> Iterator[bool]:
    """Whether no session holds the build; while it yields True, none can take a hold."""
    fd = _open(venv)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_held(venv: Path) -> bool:
    """Whether a running session holds the build now (a listing's answer: it may change)."""
    if not hold_path(venv).exists():
        return False
    with unheld(venv) as free:
        return not free
