"""GPU leases: one lock file per GPU, so servers of parallel workers never share a GPU.

A lease takes ``count`` free GPUs: each one's lock in a local lock folder
(``gpu-N.lock``, an advisory ``flock`` the kernel drops when the holder dies, so
a crashed or killed worker frees its GPUs), and only GPUs no outside process
holds (asked of amd-smi / rocm-smi / nvidia-smi at lease time). Beside each lock
an owner file says who holds it, for the messages of anyone waiting, and which
server runs on it: a server outlives a worker killed with SIGKILL (it has its
own session), so the next lease holder stops that orphan before using the GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from pytest_mi300x.gpus.discovery import Inventory, vendor
from pytest_mi300x.gpus.numbering import Numbering
from pytest_mi300x.results.files import write_json_atomic
from pytest_mi300x.results.model import FailureKind

DEFAULT_LOCK_DIR = Path("/tmp/pytest-mi300x-gpu-locks")
LOCK_DIR_ENV = "PYTEST_MI300X_LOCK_DIR"


class LeaseError(Exception):
    """Not enough free GPUs in time; the message is one line naming who holds each."""

    failure_kind = FailureKind.INFRA
    lasting = True
    """Whether the next test would meet the same (the pool fails it at once, instead of
    waiting the whole lease timeout again); a GPU that did not cool down in time is not:
    the next test waits for it again."""


class StillHot(LeaseError):
    """A GPU too hot to measure on stayed hot for the whole cool-down wait."""

    lasting = False


COOLDOWN_S = 300.0
"""How long a lease waits for a hot GPU (a previous server's heat) to cool below HOT_C."""


def checked_lock_dir(path: Path) -> Path:
    """The lock folder, made if absent (sticky and shared, like /tmp: users of one host
    share its GPUs), refused when it cannot be trusted: not a plain folder, or writable by
    others without the sticky bit (anyone could then replace our owner files)."""
    try:
        if not path.exists():
            path.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(path, 0o1777)
        info = path.lstat()
    except OSError as exc:
        raise LeaseError(f"GPU lock folder {path}: {exc.strerror}; set lock_dir in the host "
                         f"profile or ${LOCK_DIR_ENV} to a local folder you can write") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise LeaseError(f"GPU lock folder {path} is not a plain folder (a link?); remove it "
                         "or set lock_dir to another path")
    shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if shared and not info.st_mode & stat.S_ISVTX:
        raise LeaseError(f"GPU lock folder {path} is writable by others without the sticky bit "
                         f"(mode {stat.S_IMODE(info.st_mode):o}): anyone could replace its lock "
                         f"records; chmod 1777 {path} (shared) or 700 (yours alone)")
    if info.st_uid != os.getuid() and not info.st_mode & stat.S_ISVTX:
        raise LeaseError(f"GPU lock folder {path} belongs to uid {info.st_uid} and is not "
                         f"shared with the sticky bit; chmod 1777 {path} or use another lock_dir")
    return path


def _read_own_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file this user owns, never through a link; {} otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}
    with os.fdopen(fd) as fh:
        if os.fstat(fh.fileno()).st_uid != os.getuid():
            return {}  # someone else's file: not a record of ours to act on
        try:
            data = json.load(fh)
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def _own_process(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}").stat().st_uid == os.getuid()
    except OSError:
        return False


def visibility_env(gpus: Sequence[int], accelerator: str,
                   numbering: Numbering | None = None) -> dict[str, str]:
    """Env that shows a server exactly ``gpus`` (the GPU tool's indices).

    ROCm: ROCR_VISIBLE_DEVICES filters first, in ROCm's own (KFD) order, which is not the
    tool's on every host: each GPU is named by its UUID (``GPU-<hex>``) where ``numbering``
    knows it (gpus/numbering.py). HIP ids then index what is left, so HIP_VISIBLE_DEVICES
    is 0..k-1. CUDA_VISIBLE_DEVICES acts like HIP's on ROCm: it gets the same value, since
    vLLM refuses HIP and CUDA values that differ and TGI counts GPUs only from
    CUDA_VISIBLE_DEVICES. Setting ROCR also overrides any narrower value inherited.
    CUDA: device ids in PCI bus order, the order nvidia-smi numbers them in.
    """
    physical = ",".join(str(g) for g in gpus)
    if vendor(accelerator) == "cuda":
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": physical}
    local = ",".join(str(i) for i in range(len(gpus)))
    rocr = ",".join(numbering.ids(gpus)) if numbering is not None else physical
    return {"ROCR_VISIBLE_DEVICES": rocr, "HIP_VISIBLE_DEVICES": local,
            "CUDA_VISIBLE_DEVICES": local}


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a running ``pid`` (guards against a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has ended


class GpuLease:
    """Context manager for ``count`` GPUs; usable without pytest.

    ``inventory`` is called once per attempt (it runs the GPU tools). While fewer
    than ``count`` GPUs are free it waits, up to ``timeout_s``.
    """

    def __init__(self, count: int, *, accelerator: str, inventory: Callable[[], Inventory],
                 lock_dir: Path = DEFAULT_LOCK_DIR, label: str = "", timeout_s: float = 3600.0,
                 poll_s: float = 0.5, progress: Callable[[str], None] | None = None,
                 cooldown_s: float = COOLDOWN_S) -> None:
        if count < 1:
            raise ValueError(f"a lease needs at least one GPU, not {count}")
        self.count = count
        self.accelerator = accelerator
        self.inventory = inventory
        self.lock_dir = lock_dir
        self.label = label
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.progress = progress
        self.cooldown_s = cooldown_s
        self.gpus: tuple[int, ...] = ()
        self.numbering: Numbering | None = None
        """How the leased GPUs were named to ROCm (from the inventory that granted them)."""
        self._locks: list[FileLock] = []

    @property
    def env(self) -> dict[str, str]:
        return visibility_env(self.gpus, self.accelerator, self.numbering)

    def __enter__(self) -> GpuLease:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> tuple[int, ...]:
        checked_lock_dir(self.lock_dir)
        wanted = self.lock_dir / f"wanted-{os.getpid()}"
        try:
            return self._acquire(wanted)
        finally:
            with contextlib.suppress(OSError):
                wanted.unlink()

    def _acquire(self, wanted: Path) -> tuple[int, ...]:
        deadline = time.monotonic() + self.timeout_s
        cooling_until: float | None = None
        said_waiting = False
        while True:
            inventory = self.inventory()
            if len(inventory.indices) < self.count:
                raise LeaseError(
                    f"a server needs {self.count} GPUs but {inventory.tool} lists "
                    f"{len(inventory.indices)} on this host; lower the tensor-parallel size")
            sick = {g.index: "; ".join(g.problems()) for g in inventory.gpus if g.problems()}
            lasting = {g.index for g in inventory.gpus if g.problems(hot=False)}
            why = "; ".join(f"GPU {g}: {w}" for g, w in sorted(sick.items()))
            if len(inventory.indices) - len(lasting) < self.count:
                raise LeaseError(
                    f"a server needs {self.count} GPUs but only "
                    f"{len(inventory.indices) - len(sick)} of {len(inventory.indices)} are "
                    f"healthy: {why}")
            if len(inventory.indices) - len(sick) < self.count:
                # Only heat stands in the way (a server just stopped on these GPUs): it
                # passes, so wait a bounded while rather than fail this and later tests.
                now = time.monotonic()
                cooling_until = cooling_until or now + self.cooldown_s
                if now >= cooling_until:
                    raise StillHot(f"a server needs {self.count} GPUs; still too hot after "
                                   f"{self.cooldown_s:.0f} s of cooling: {why}; check the "
                                   "host's cooling (amd-smi metric -t)")
                if self.progress is not None and not said_waiting:
                    self.progress(f"waiting up to {self.cooldown_s:.0f} s for GPUs to cool "
                                  f"for {self.label}: {why}")
                    said_waiting = True
                time.sleep(self.poll_s)
                continue
            blocked = self._try(inventory, sick)
            if len(self._locks) == self.count:
                self.numbering = inventory.numbering
                return self.gpus
            if time.monotonic() >= deadline:
                raise LeaseError(
                    f"no {self.count} free GPU(s) after {self.timeout_s:.0f} s for {self.label}: "
                    + "; ".join(f"GPU {g} {why}" for g, why in sorted(blocked.items()))
                    + f" (locks in {self.lock_dir})")
            # Tell idle servers of other workers that someone waits for a GPU.
            wanted.touch()
            if not said_waiting and self.progress is not None:
                self.progress(f"waiting for {self.count} free GPU(s) for {self.label}: "
                              + "; ".join(f"GPU {g} {w}" for g, w in sorted(blocked.items())))
                said_waiting = True
            time.sleep(self.poll_s)

    def _try(self, inventory: Inventory, sick: dict[int, str]) -> dict[int, str]:
        """Lock free, healthy GPUs until ``count`` are held; return why the others were
        passed over."""
        blocked: dict[int, str] = {g: f"unhealthy: {why}" for g, why in sick.items()}
        for gpu in inventory.indices:
            if len(self._locks) == self.count:
                break
            if gpu in sick:
                continue
            lock = FileLock(self.lock_dir / f"gpu-{gpu}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                blocked[gpu] = f"leased by {self._owner_text(gpu)}"
                continue
            self._stop_orphan(gpu)
            holder = inventory.holder(gpu)
            if holder is not None:
                lock.release()
                blocked[gpu] = f"held outside this harness: {holder}"
                continue
            self._locks.append(lock)
            self.gpus = (*self.gpus, gpu)
            self._write_owner(gpu, {})
        if len(self._locks) < self.count:
            self.release()  # all or nothing: holding some while waiting could deadlock
        return blocked

    def attach(self, server_pid: int, cleanup: Sequence[str] | None = None) -> None:
        """Record the server started on the leased GPUs, so an orphan can be stopped later.

        The server leads its own process group; ``cleanup`` removes what outlives the
        group (``docker rm -f NAME``: a container keeps its GPUs after its client died).
        """
        extra = {"server_pgid": server_pid, "server_start": _start_time(server_pid),
                 "cleanup": list(cleanup or ())}
        for gpu in self.gpus:
            self._write_owner(gpu, extra)

    def release(self) -> None:
        """Drop every lock held; idempotent."""
        for gpu in self.gpus:
            with contextlib.suppress(OSError):
                self._owner_path(gpu).unlink()
        for lock in self._locks:
            lock.release()
        self._locks = []
        self.gpus = ()

    # --- owner files --------------------------------------------------------------

    def _owner_path(self, gpu: int) -> Path:
        return self.lock_dir / f"gpu-{gpu}.owner.json"

    def _write_owner(self, gpu: int, extra: dict[str, Any]) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "label": self.label,
                  "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        # A fresh temporary file renamed over the old: a link planted at either name is
        # replaced, never followed.
        write_json_atomic(self._owner_path(gpu), record)

    def _read_owner(self, gpu: int) -> dict[str, Any]:
        try:
            data = json.loads(self._owner_path(gpu).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _owner_text(self, gpu: int) -> str:
        owner = self._read_owner(gpu)
        if not owner:
            return "another process (no owner record)"
        return (f"worker {owner.get('worker')} (pid {owner.get('pid')}) for "
                f"{owner.get('label') or '?'} since {owner.get('since')}")

    def _stop_orphan(self, gpu: int) -> None:
        stop_orphan(self.lock_dir, gpu, self.progress)


def stop_orphan(lock_dir: Path, gpu: int, progress: Callable[[str], None] | None = None) -> None:
    """Stop the server the owner file of ``gpu`` names, if it still runs.

    Call only while holding the GPU's lock: then the owner that started it is dead. The
    record is believed only when this user wrote it and the process it names is this
    user's and started when the record says: a planted file cannot make us stop anything.
    """
    owner = _read_own_json(lock_dir / f"gpu-{gpu}.owner.json")
    if not owner:
        return  # none, unreadable, or another user's: nothing of ours to act on
    pgid = owner.get("server_pgid")
    cleanup = owner.get("cleanup")
    cleanup = ([str(a) for a in cleanup] if isinstance(cleanup, list) else [])
    if isinstance(pgid, int) and not isinstance(pgid, bool) and pgid > 1 \
            and owner.get("server_start") == _start_time(pgid) and _own_process(pgid):
        if progress is not None:
            progress(f"GPU {gpu}: stopping server pid {pgid} left by dead worker "
                     f"{owner.get('worker')} (pid {owner.get('pid')})")
        _kill_group(pgid)
    if cleanup:
        # What outlived the group (a container holding the GPU); idempotent.
        if progress is not None:
            progress(f"GPU {gpu}: running {' '.join(cleanup)} for dead worker "
                     f"{owner.get('worker')}")
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(cleanup, capture_output=True, timeout=120, check=False)


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        for _ in range(50):
            if _start_time(pgid) is None:
                return
            time.sleep(0.1)


def sweep_orphans(lock_dir: Path, progress: Callable[[str], None] | None = None) -> None:
    """Stop servers left by dead lease holders on every GPU no one leases now."""
    for path in sorted(lock_dir.glob("gpu-*.lock")):
        gpu = path.name.removeprefix("gpu-").removesuffix(".lock")
        if not gpu.isdigit():
            continue
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        try:
            stop_orphan(lock_dir, int(gpu), progress)
            with contextlib.suppress(OSError):
                (lock_dir / f"gpu-{gpu}.owner.json").unlink()
        finally:
            lock.release()


def others_waiting(lock_dir: Path) -> bool:
    """Whether another live process waits for GPUs in ``lock_dir``."""
    for flag in lock_dir.glob("wanted-*"):
        pid = flag.name.removeprefix("wanted-")
        if pid.isdigit() and int(pid) != os.getpid() and _start_time(int(pid)) is not None:
            return True
    return False


def lock_dir_from_env(default: Path = DEFAULT_LOCK_DIR) -> Path:
    value = os.environ.get(LOCK_DIR_ENV)
    return Path(value) if value else default
