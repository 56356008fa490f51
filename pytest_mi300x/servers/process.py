"""A server process: spawned in its own session, ready on an HTTP probe, stopped as a tree."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from pytest_mi300x.net import get_status
from pytest_mi300x.results.model import FailureKind
from pytest_mi300x.results.redact import redact
from pytest_mi300x.results.redact import text as redact_text
from pytest_mi300x.servers.records import stop_group

LOG_TAIL_LINES = 200
_ERROR_LINE = re.compile(r"(\w*(Error|Exception): |error: |unrecognized arguments)")
_NOT_ERROR = re.compile(r"\b(WARNING|INFO|DEBUG)\b")
_WRAPPER = re.compile(r"root cause above")


class ServerError(Exception):
    """A server that would not start or died; carries its log tail."""

    failure_kind = FailureKind.ENGINE

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail

    def __str__(self) -> str:
        head = super().__str__()
        if not self.log_tail:
            return head
        return f"{head}\n--- server log (last lines) ---\n{self.log_tail}"


class ServerExited(ServerError):
    """The process ended before it was ready, or while serving."""


class ServerStartTimeout(ServerError):
    """The readiness probe did not pass in time."""


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """Env fit for logs and reports: values of secret-looking names hidden."""
    return dict(redact(dict(env)))


def open_private_log(path: Path) -> BinaryIO:
    """``path`` opened to append, readable by its owner only: until it is redacted, a log
    may hold what an engine echoed of its secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # one that existed keeps no wider mode
    return os.fdopen(fd, "ab")


def read_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("r", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip("\n")
    except OSError:
        return ""


def error_line(log_tail: str) -> str | None:
    """The engine's own error line worth a one-line message: the root cause when
    the last error only points at it (vLLM's "See root cause above")."""
    found = [line.strip() for line in log_tail.splitlines()
             if _ERROR_LINE.search(line) and not _NOT_ERROR.search(line)]
    if not found:
        return None
    causes = [line for line in found if not _WRAPPER.search(line)]
    return causes[-1] if causes else found[-1]


class ServerProcess:
    """Context manager for one server process; usable without pytest.

    ``__enter__`` spawns and waits for readiness; if that fails the whole
    process tree is stopped before the error propagates.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        ready_url: str,
        start_timeout: float = 900.0,
        stop_grace: float = 20.0,
        poll_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        on_spawn: Callable[[int], None] | None = None,
        nice: int = 0,
        on_wait: Callable[[float, str], None] | None = None,
        cpus: tuple[int, ...] = (),
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.ready_url = ready_url
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.poll_interval = poll_interval
        self._clock = clock
        self._on_spawn = on_spawn
        self._on_wait = on_wait
        """Told (elapsed seconds, last log line) while the server is not ready yet."""
        self.nice = nice
        self.cpus = cpus
        """The CPUs the server's processes start on (an engine may bind its compute
        threads elsewhere); () leaves them to the OS."""
        self.scheduling: dict[str, int | list[int] | None] = {}
        """The niceness applied to the server's process group and its autogroup, and
        the CPUs it started on."""
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = self._clock()
        with open_private_log(self.log_path) as log:
            # A new session gives the server its own process group, so the
            # engine core and its workers stop with it; close_fds keeps our
            # GPU-lease lock files out of the child.
            self._proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                preexec_fn=self._pin if self.cpus else None,
            )
        if self.cpus:
            self.scheduling["cpus"] = list(self.cpus)
        try:
            self._renice()
            if self._on_spawn is not None:
                self._on_spawn(self._proc.pid)
            self._wait_ready(started)
            self._renice()  # processes the server forked while it started
        except BaseException:
            self.stop()
            raise
        self.startup_s = self._clock() - started

    def _pin(self) -> None:
        # In the child, before exec: what it forks inherits the set.
        os.sched_setaffinity(0, set(self.cpus))

    def _renice(self) -> None:
        """Lower the whole server's CPU priority by ``nice`` so that a load generator on
        the same machine is never queued behind it.

        With autogroup scheduling (Linux's default for desktops and many VMs) a process's
        nice only weighs against processes of its own session, and the server has a session
        of its own: the session's autogroup is reniced too. Measured on 2 cores: the
        client's main thread had waited 100-280 ms at a time for a CPU, which sent requests
        up to 1 s late and merged token events (median ITL of 0).
        """
        if self.nice <= 0 or self._proc is None:
            return
        pid = self._proc.pid
        try:
            os.setpriority(os.PRIO_PGRP, pid, self.nice)
            self.scheduling["nice"] = self.nice
        except OSError:
            self.scheduling["nice"] = None
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(self.nice))
            self.scheduling["autogroup_nice"] = self.nice
        except OSError:
            self.scheduling["autogroup_nice"] = None  # no autogroup here: plain nice decides

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        deadline = started + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail()
                cause = error_line(tail) or "no error line in its log"
                raise ServerExited(
                    f"server exited with code {code} before it was ready: {cause} "
                    f"(log: {self.log_path})", tail)
            if get_status(self.ready_url, timeout=2.0) == 200:
                return
            if self._clock() > deadline:
                raise ServerStartTimeout(
                    f"server not ready on {self.ready_url} after {self.start_timeout:.0f} s "
                    f"(log: {self.log_path}); raise the host's start_timeout_s if the engine "
                    "is merely slow", self.log_tail())
            if self._on_wait is not None:
                tail = self.log_tail(1)
                self._on_wait(self._clock() - started, tail.strip())
            time.sleep(self.poll_interval)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; whether it has."""
        if self._proc is None:
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=timeout)
        return not self.alive()

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return redact_text(read_tail(self.log_path, lines))

    def stop(self) -> None:
        """SIGTERM to the process group, a grace period, then SIGKILL; idempotent. Returns
        once no member of the group is left (zombies, reaped by whoever adopted them,
        do not count)."""
        proc = self._proc
        if proc is None:
            return
        # The leader of its own session: its pid is the group's id.
        stop_group(proc.pid, self.stop_grace, poll=proc.poll)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
