"""The night's state shared through a git branch, so a fleet (or an ephemeral runner) has it.

The state directory keeps each host's files under ``hosts/<host>/``; the data branch holds
the same tree. ``pull()`` brings every host's files from the branch into the state;
``push(host)`` replaces that one host's folder on the branch with the state's and pushes,
so hosts never write each other's files and two hosts pushing at once both land: a push
refused as not a fast-forward is made again on top of the branch's new tip, a few times.

``pull()`` merges three ways against what the last sync saw (``.sync-manifest.json`` in the
state): a file changed only on the branch is taken, a file changed only here (a push that
failed last night) is kept, and a file changed on both sides keeps this runner's copy,
said on the log.

Nothing secret is pushed: a file holding the value of a secret-named environment variable
(the token the workflow hands git, HF_TOKEN, ...; results/redact.py) stops the push with
its name, a remote URL with a password in it is refused (hand git the token through its
environment instead), and symbolic links are not followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from filelock import FileLock

from pytest_mi300x.results import redact
from pytest_mi300x.results.files import (
    ReadError,
    read_json,
    slug,
    write_json_atomic,
    write_text_atomic,
)

TOKEN_ENV = "PYTEST_MI300X_SYNC_TOKEN"
"""A token git may push with (a workflow's GITHUB_TOKEN); it reaches git through git's
environment only, never a URL, a file or a command line."""
HOSTS_DIR = "hosts"
MANIFEST = ".sync-manifest.json"
DEFAULT_BRANCH = "night-state"
GIT_TIMEOUT_S = 600
_REJECTED = ("[rejected]", "non-fast-forward", "fetch first", "stale info",
             "cannot lock ref", "failed to update ref")


class Sync(Protocol):
    """Where a night's state is shared: read before a night, written after it."""

    def pull(self) -> None: ...

    def push(self, host: str) -> None: ...


def token_env(token: str, server: str) -> dict[str, str]:
    """git's environment for an HTTPS remote on ``server`` with ``token``: an extra header
    git adds to its requests (what actions/checkout does), so nothing on disk holds it."""
    import base64

    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    redact.register_env({TOKEN_ENV: token, "PYTEST_MI300X_SYNC_BASIC": basic})
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{server}/.extraheader",
            "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}"}


class SyncError(RuntimeError):
    """The state could not be pulled or pushed; one line with what and the fix."""


class GitBranchSync:
    """The state directory ``state`` synced with ``branch`` of the git repository ``remote``
    (a URL or a path), through a working clone at ``clone`` (default: beside the state)."""

    def __init__(self, state: Path, remote: str, branch: str = DEFAULT_BRANCH, *,
                 clone: Path | None = None, attempts: int = 5, backoff_s: float = 1.0,
                 log: Callable[[str], None] | None = None) -> None:
        parts = urlsplit(remote)
        if parts.password:
            raise SyncError(f"sync remote {parts.scheme}://{parts.hostname}/...: a password "
                            "or token in the URL would be stored in the clone; give the URL "
                            "without it and hand git the token through its environment")
        if attempts < 1:
            raise SyncError(f"sync attempts {attempts}: give 1 or more")
        self.state = Path(state)
        self.remote = remote
        self.branch = branch
        self.clone = Path(clone) if clone else self.state.parent / f".{self.state.name}.sync"
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.log = log or (lambda line: print(f"night sync: {line}", file=sys.stderr))

    # -- the protocol -----------------------------------------------------------------

    def pull(self) -> None:
        with self._locked():
            if not self._fetch():
                self.log(f"{self.remote} has no branch {self.branch} yet: nothing to pull")
                return
            self._git("checkout", "-q", "-f", "-B", self.branch, self._tip)
            base = self._manifest()
            remote = _digests(self.clone / HOSTS_DIR)
            local = _digests(self.state / HOSTS_DIR)
            taken = kept = 0
            for rel in sorted(set(base) | set(remote) | set(local)):
                theirs, ours, was = remote.get(rel), local.get(rel), base.get(rel)
                if theirs == ours:
                    continue
                if ours == was:
                    self._take(rel, theirs is not None)
                    taken += 1
                else:
                    kept += 1
                    if theirs != was:
                        self.log(f"{HOSTS_DIR}/{rel} changed here and on {self.branch}: "
                                 "this runner's copy is kept (its host's writer is here)")
            self._save_manifest(remote)
            self.log(f"pulled {self.branch}: {taken} file(s) taken, {kept} kept from here")

    def push(self, host: str) -> None:
        folder = slug(host)
        source = self.state / HOSTS_DIR / folder
        with self._locked():
            for attempt in range(1, self.attempts + 1):
                exists = self._fetch()
                if exists:
                    self._git("checkout", "-q", "-f", "-B", self.branch, self._tip)
                else:
                    self._orphan()
                self._replace(folder, source)
                self._git("add", "-A", "--", f"{HOSTS_DIR}/{folder}")
                if self._git("diff", "--cached", "--quiet", check=False).returncode == 0:
                    self.log(f"{host}: nothing new to push to {self.branch}")
                    self._after_push(folder)
                    return
                self._git("-c", "user.name=pytest-mi300x night",
                          "-c", "user.email=night@pytest-mi300x.invalid",
                          "commit", "-q", "--no-verify", "-m", f"night state: {host}")
                proc = self._git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}",
                                 check=False)
                if proc.returncode == 0:
                    self.log(f"{host}: pushed to {self.branch} (attempt {attempt})")
                    self._after_push(folder)
                    return
                if not any(mark in proc.stderr for mark in _REJECTED):
                    raise SyncError(f"git push to {self.remote} ({self.branch}) failed: "
                                    f"{_last_line(proc.stderr)}")
                self.log(f"{host}: {self.branch} moved on (another host pushed); "
                         f"again on its new tip ({attempt}/{self.attempts})")
                if self.backoff_s:
                    time.sleep(min(30.0, self.backoff_s * 2 ** (attempt - 1))
                               * random.uniform(0.5, 1.0))
        raise SyncError(f"{host}: {self.branch} of {self.remote} moved on {self.attempts} "
                        "times in a row; run the push again (each host writes only its "
                        "own files, so it cannot conflict)")

    # -- git --------------------------------------------------------------------------

    @property
    def _tip(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        try:
            proc = subprocess.run(["git", *args], cwd=self.clone, capture_output=True,
                                  text=True, timeout=GIT_TIMEOUT_S, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise SyncError(f"git {args[0]} on {self.remote} took over {GIT_TIMEOUT_S} s; "
                            "check the network and run it again") from exc
        if check and proc.returncode != 0:
            raise SyncError(f"git {args[0]} in {self.clone} failed: "
                            f"{_last_line(proc.stderr or proc.stdout)}")
        return proc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The working clone, made on first use, held by this process alone."""
        self.clone.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.clone) + ".lock"):
            self.clone.mkdir(exist_ok=True)
            if not (self.clone / ".git").exists():
                self._git("init", "-q")
                self._git("remote", "add", "origin", self.remote)
            else:
                self._git("remote", "set-url", "origin", self.remote)
            yield

    def _fetch(self) -> bool:
        """Fetch the branch; False when the remote has none yet."""
        probe = self._git("ls-remote", "--exit-code", "--heads", "origin", self.branch,
                          check=False)
        if probe.returncode == 2:
            return False
        if probe.returncode != 0:
            raise SyncError(f"cannot reach {self.remote}: {_last_line(probe.stderr)}")
        self._git("fetch", "-q", "--no-tags", "origin",
                  f"+refs/heads/{self.branch}:{self._tip}")
        return True

    def _orphan(self) -> None:
        """A first commit of its own (the branch does not exist yet)."""
        self._git("symbolic-ref", "HEAD", f"refs/heads/{self.branch}")
        self._git("update-ref", "-d", f"refs/heads/{self.branch}", check=False)
        self._git("rm", "-r", "-q", "-f", "--cached", "--ignore-unmatch", ".")
        for child in self.clone.iterdir():
            if child.name != ".git":
                _remove(child)

    # -- files ------------------------------------------------------------------------

    def _take(self, rel: str, present: bool) -> None:
        target = self.state / HOSTS_DIR / rel
        if present:
            target.parent.mkdir(parents=True, exist_ok=True)
            # the state is the project's own text (JSON, JSON Lines, Markdown)
            text = (self.clone / HOSTS_DIR / rel).read_text(encoding="utf-8", errors="replace")
            write_text_atomic(target, text)
        else:
            target.unlink(missing_ok=True)

    def _replace(self, folder: str, source: Path) -> None:
        target = self.clone / HOSTS_DIR / folder
        _remove(target)
        redact.register_process_env()
        for path in _files(source):
            rel = path.relative_to(source)
            data = path.read_bytes()
            text = data.decode(errors="replace")
            if redact.text(text) != text:
                raise SyncError(f"{path} holds the value of a secret (an environment "
                                "variable named like a token or key): the state is not "
                                "pushed; take it out of that file")
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(data)

    def _manifest(self) -> dict[str, str]:
        path = self.state / MANIFEST
        if not path.exists():
            return {}
        try:
            doc = read_json(path, "a sync manifest", "it is rewritten by the next sync")
        except ReadError as exc:
            self.log(f"{exc}: every file that differs keeps this runner's copy")
            return {}
        files = doc.get("files", {}) if isinstance(doc, dict) else {}
        return {str(k): str(v) for k, v in files.items()}

    def _save_manifest(self, files: dict[str, str]) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state / MANIFEST, {"branch": self.branch, "files": files})

    def _after_push(self, folder: str) -> None:
        """What the branch now holds of this host is the base of the next pull."""
        files = {k: v for k, v in self._manifest().items() if not k.startswith(f"{folder}/")}
        files.update(_digests(self.clone / HOSTS_DIR, folder))
        self._save_manifest(files)


def _files(root: Path) -> Iterator[Path]:
    """Regular files under ``root``; symbolic links are not followed (one could point at a
    file outside the state)."""
    if not root.is_dir() or root.is_symlink():
        return
    for path in sorted(root.iterdir()):
        if path.is_symlink():
            continue
        if path.is_dir():
            yield from _files(path)
        elif path.is_file():
            yield path


def _digests(root: Path, only: str = "") -> dict[str, str]:
    """sha256 of every file under ``root`` (or its folder ``only``), by path relative to it."""
    base = root / only if only else root
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in _files(base)}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return redact.text(lines[-1]) if lines else "no message"
