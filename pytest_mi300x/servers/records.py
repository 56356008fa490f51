"""A record of every server a session starts, so that nothing outlives a killed session.

Each running server has a small JSON file in a private folder (``<cache>/servers``): its
process group, the group leader's start time (so a reused pid is never mistaken for it),
the session process that owns it (pid and start time) and the command that removes what
outlives the process group (a container); beside it, its log and the fingerprints of the
session's secrets (keyed digests, never the secrets). A server stopped normally removes
both.

What SIGKILL, a lost SSH session or a second Ctrl-C leave behind is reaped by the next
session on the host and by ``pytest-mi300x clean``: a record whose owner is gone has its
process group stopped (SIGTERM, then SIGKILL; never one whose start time is unknown, which
could be a stranger that reused the id), its cleanup command run, and the secrets the
engine wrote into its log hidden. A record whose owner still runs (another session, an
xdist worker) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pytest_mi300x.results import redact
from pytest_mi300x.results.files import redact_file, write_json_atomic

SUFFIX = ".server.json"
LOG_SUFFIX = ".log.json"
CLEANUP_TIMEOUT_S = 120.0
PROBLEM = "could not "
"""How reap's lines about what failed begin."""


class RecordsError(Exception):
    """The records folder cannot be trusted or used; one line naming it and the fix."""


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat);
    None when there is no such process (or it is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[-1].split()
    if not fields or fields[0] == "Z":
        return None
    return int(fields[19])


def alive(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started``."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)


@dataclass(frozen=True)
class ServerRecord:
    """One server a session started."""

    pgid: int
    started: int | None
    owner_pid: int
    owner_started: int | None
    label: str
    cleanup: tuple[str, ...] = ()
    created: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.pgid}-{self.started}{SUFFIX}"

    @property
    def log_name(self) -> str:
        return f"{self.pgid}-{self.started}{LOG_SUFFIX}"


@dataclass(frozen=True)
class LogSecrets:
    """Beside a record: its server's log, and the fingerprints of the secrets the session
    knew when it started the server (redact.fingerprints), keyed with ``salt``. A file of
    its own: the record keeps the form older versions read (they drop one they cannot)."""

    log: str
    salt: str
    fingerprints: tuple[redact.Fingerprint, ...]
    owner_pid: int
    owner_started: int | None


def private_folder(path: Path) -> Path:
    """``path`` created 0700 if absent; refused if another user owns it or others may write
    to it (a planted file there could make us stop someone else's processes)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise RecordsError(f"{path}: cannot be used for server records ({exc.strerror}); "
                           "give a writable --engine-cache") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RecordsError(f"{path} is not a plain folder; remove it and run again")
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RecordsError(f"{path} is owned by uid {info.st_uid} or writable by others "
                           f"(mode {stat.S_IMODE(info.st_mode):o}); it must be yours alone: "
                           f"chmod 700 {path} or remove it")
    return path


class ServerRecords:
    """The records folder of this user's servers on this machine."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(self, pgid: int, label: str, cleanup: Sequence[str] | None = None,
            log: Path | None = None) -> ServerRecord:
        me = os.getpid()
        record = ServerRecord(pgid, start_time(pgid), me, start_time(me), label,
                              tuple(cleanup or ()), time.time())
        folder = private_folder(self.folder)
        if log is not None:
            salt = os.urandom(16)
            write_json_atomic(folder / record.log_name, asdict(LogSecrets(
                str(log.absolute()), salt.hex(), tuple(redact.fingerprints(salt)), me,
                record.owner_started)))
        write_json_atomic(folder / record.name, asdict(record))
        return record

    def remove(self, record: ServerRecord) -> None:
        for name in (record.name, record.log_name):
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()

    def read(self) -> list[ServerRecord]:
        if not self.folder.is_dir():
            return []
        private_folder(self.folder)
        out = []
        known = {f.name for f in fields(ServerRecord)}
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                doc = _read_json(path)
                # Fields a later version added are not ours to read.
                out.append(ServerRecord(**{**{k: v for k, v in doc.items() if k in known},
                                           "cleanup": tuple(doc.get("cleanup", ()))}))
            except (OSError, ValueError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()  # unreadable: nothing it names can be trusted
        return out

    def reap(self, progress: Callable[[str], None] = lambda line: None,
             grace_s: float = 10.0) -> list[str]:
        """Stop the servers of sessions that are gone; returns what was done, a line each."""
        done = []
        for record in self.read():
            if alive(record.owner_pid, record.owner_started):
                continue
            what = f"{record.label} (process group {record.pgid})"
            if record.started is None:
                done.append(f"left {what} alone: its start time was not recorded, so it "
                            "cannot be told from a process that reused its id")
            elif alive(record.pgid, record.started):
                stop_group(record.pgid, grace_s)
                done.append(f"stopped {what}, left by session {record.owner_pid}")
            if record.cleanup:
                problem = run_cleanup(record.cleanup)
                done.append(f"ran {' '.join(record.cleanup)}" if problem is None else
                            f"{PROBLEM}run {' '.join(record.cleanup)}: {problem}")
            done += _hide_secrets_in_log(self.folder / record.log_name)
            self.remove(record)
        # Left by a version that reaped the server but not its log.
        for path in sorted(self.folder.glob(f"*{LOG_SUFFIX}")):
            if not (self.folder / path.name.replace(LOG_SUFFIX, SUFFIX)).exists():
                done += _hide_secrets_in_log(path, unless_owner_lives=True)
        for line in done:
            progress(line)
        return done


def _read_json(path: Path) -> dict[str, Any]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a planted link is not followed
    with os.fdopen(fd) as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


def _hide_secrets_in_log(path: Path, unless_owner_lives: bool = False) -> list[str]:
    """Hide, in the log a LogSecrets file names, the secrets it fingerprints; then remove
    it. What went wrong, as a line."""
    try:
        doc = _read_json(path)
        secrets = LogSecrets(**{**doc, "fingerprints": tuple(
            (int(n), str(d)) for n, d in doc.get("fingerprints", ()))})
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError):
        path.unlink(missing_ok=True)
        return []
    if unless_owner_lives and alive(secrets.owner_pid, secrets.owner_started):
        return []
    try:
        redact_file(Path(secrets.log), bytes.fromhex(secrets.salt), secrets.fingerprints)
    except (OSError, ValueError) as exc:
        return [f"{PROBLEM}hide secrets in {secrets.log}: {exc}"]
    finally:
        path.unlink(missing_ok=True)
    return []


def run_cleanup(argv: Sequence[str]) -> str | None:
    """Run a cleanup command (``docker rm -f NAME``); why it could not run, else None.
    Its exit code is not a failure: what it removes may be gone already."""
    try:
        subprocess.run(list(argv), capture_output=True, timeout=CLEANUP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"no answer after {CLEANUP_TIMEOUT_S:g} s (stopped)"
    except OSError as exc:
        return f"{exc.strerror or exc} ({argv[0]})"
    return None


def stop_group(pgid: int, grace_s: float, poll: Callable[[], object] | None = None) -> None:
    """SIGTERM to a process group, then SIGKILL after ``grace_s`` if any member remains.
    ``poll`` reaps the leader when this process is its parent (else it stays a zombie)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        if not group_members(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        if not group_members(pgid):
            return
        time.sleep(0.05)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members

