"""The one way this project names, writes and reads its files.

- ``slug``: a file-name-safe form of any id (test id, model, host), readable and
  unique: a short hash of the exact id is kept beside the readable part, so
  ``test[a]`` and ``test_a``, ``test[x y]`` and ``test[x:y]``, or two long ids
  that share a prefix never share a file, and ``/`` or ``..`` never leave the folder.
- ``write_json_atomic`` / ``write_text_atomic``: readers never see half a file; a full disk
  or a read-only folder is one line naming the path (``WriteError``); every secret is
  hidden first (results/redact.py), so nothing written through here can leak one.
- ``append_jsonl`` / ``read_jsonl``: JSON Lines appended under a lock and read
  line by line; a bad line is skipped and reported, never fatal, and the next
  append starts on a line of its own.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mi300x.results.kinds import FailureKind
from pytest_mi300x.results.redact import Fingerprint, redact, text_by_fingerprints
from pytest_mi300x.results.redact import text as redact_text

RESULTS_DIRNAME = ".perf-results"
"""Per-checkout output folder: run folders and the history live under it."""
HISTORY_NAME = "history.jsonl"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")
SLUG_MAX = 100


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def slug(text: str, max_len: int = SLUG_MAX) -> str:
    """``text`` as one safe path component: itself when it already is one (``cpu``,
    ``llama-3.1-70b``), else its readable part and 8 hex digits of its hash."""
    if _SAFE.match(text) and len(text) <= max_len and ".." not in text:
        return text
    readable = _UNSAFE.sub("_", text.replace("::", "__")).strip("_.")[:max_len].rstrip("_.")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{readable or 'x'}-{digest}"


def default_results_root(rootdir: Path) -> Path:
    return rootdir / RESULTS_DIRNAME


def default_history_file(rootdir: Path) -> Path:
    return default_results_root(rootdir) / HISTORY_NAME


def result_path(results_dir: Path, nodeid: str) -> Path:
    """Where one test's result document goes in a run folder."""
    return results_dir / f"{slug(nodeid)}.json"


class WriteError(OSError):
    """A file this project writes could not be written; one line with the path and the fix."""

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())  # the line itself, no "[Errno N]"

    @property
    def failure_kind(self) -> FailureKind:
        """A full disk (or quota) is the machine's; a path that cannot be written is bad
        input."""
        return (FailureKind.INFRA if self.errno in (errno.ENOSPC, errno.EDQUOT)
                else FailureKind.HARNESS)


def _write_error(path: Path, exc: OSError) -> WriteError:
    fix = ("free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else "check that the folder exists and is writable")
    return WriteError(exc.errno or 0, f"cannot write {path}: {exc.strerror or exc}; {fix}")


def _write_atomic(path: Path, content: str) -> None:
    """Write ``content`` so that readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.replace(tmp, path)  # rename never follows a link planted at ``path``
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def write_json_atomic(path: Path, document: Any) -> None:
    """``document`` as JSON, secrets hidden, all or nothing."""
    _write_atomic(path, json.dumps(redact(document), indent=1, sort_keys=True, default=str)
                  + "\n")


def write_text_atomic(path: Path, content: str) -> None:
    """A text file (a report), secrets hidden, all or nothing."""
    _write_atomic(path, redact_text(content))


def redact_file(path: Path, salt: bytes = b"", prints: Iterable[Fingerprint] = ()) -> None:
    """Hide known secrets in a file another program wrote (a server's log), and those of
    ``prints`` (keyed with ``salt``) that a session which is gone knew; left readable by
    its owner only."""
    try:
        content = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    hidden = redact_text(content)
    if salt:
        hidden = text_by_fingerprints(hidden, salt, prints)
    if hidden != content:
        write_text_atomic(path, hidden)


def append_text(path: Path, content: str) -> None:
    """Append to a text file someone else owns (a CI job summary), secrets hidden."""
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(redact_text(content))
    except OSError as exc:
        raise _write_error(path, exc) from None


def append_jsonl(path: Path, entries: Iterable[Any]) -> int:
    """Append one JSON line per entry under a file lock; returns how many were written.

    A previous append cut short (a full disk) leaves a partial last line: the
    new entries start on a fresh line instead of being glued to it.
    """
    from filelock import FileLock

    lines = [json.dumps(redact(e), sort_keys=True, default=str) + "\n" for e in entries]
    if not lines:
        return 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"), path.open("a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write("".join(lines).encode())
    except OSError as exc:
        raise _write_error(path, exc) from None
    return len(lines)


@dataclass(frozen=True)
class BadLine:
    """A line of a JSON Lines file that was skipped."""

    path: Path
    number: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.number}: skipped ({self.reason})"


def read_jsonl(path: Path, skipped: list[BadLine] | None = None
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON object line of ``path``; bad lines go to
    ``skipped`` (if given)."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ReadError(f"cannot read {path}: {exc.strerror or exc}; give a JSON Lines "
                        "file") from None
    with fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                reason = getattr(exc, "msg", None) or type(exc).__name__
                if skipped is not None:
                    skipped.append(BadLine(path, number, f"not a JSON line: {reason}"))
                continue
            if not isinstance(entry, dict):
                if skipped is not None:
                    skipped.append(BadLine(path, number, "not a JSON object"))
                continue
            yield number, entry


class ReadError(Exception):
    """A file that cannot be read as what it should be; one line with the path and the fix."""


def read_json(path: Path, what: str, fix: str) -> Any:
    """A JSON document, or ReadError naming the file, what it should be and the fix."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise ReadError(f"{path} is a folder, not {what}; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "msg", None) or getattr(exc, "strerror", None) or str(exc)
        raise ReadError(f"{path}: not {what} ({reason}); {fix}") from None
