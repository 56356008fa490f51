"""TEST DOUBLE of the night's start runners (a RunnerFactory): each build has a true speed,
each start its own offset and each run a little more (tests/doubles/recorded_starts.py); a
phase can make a build slower for its starts only (``slow_in={"gate": {"b": 0.8}}``: a
bad hour during the gate, not the build), a build can be broken, and ``kill_after`` ends
the process-like run after that many starts (a killed job), with an exception no layer
catches. The real engine runs the same night in tests/test_night_engine.py."""

from __future__ import annotations

from pathlib import Path

from pytest_mi300x.ab.starts import Start
from pytest_mi300x.night.command import CPU_TESTS
from tests.doubles.recorded_starts import RecordedStarts

KEY = ("cpu", "vllm", "tiny:llama")
STACK = {"cpu_model": "double", "cpu_count": 2, "engine_build": "?",
         "workload": {"prompts": 40}, "flag_set": {"name": "default"}}


class Killed(BaseException):
    """The job was killed."""


class NightStarts:
    def __init__(self, speed: dict[str, float], *, between: float = 0.01,
                 within: float = 0.01, slow_in: dict[str, dict[str, float]] | None = None,
                 broken: tuple[str, ...] = (), kill_after: int | None = None,
                 seed: int = 1, tests: tuple[str, ...] = tuple(CPU_TESTS)) -> None:
        self.recorded = RecordedStarts(dict(speed), seed=seed, between=between,
                                       within=within, broken=broken, tests=tests,
                                       store_key=KEY, stack=dict(STACK))
        self.slow_in = slow_in or {}
        self.kill_after = kill_after
        self.calls: list[tuple[str, str]] = []
        self.selections: list[list[str]] = []

    def __call__(self, selection: list[str], out: Path, extra: list[str]):  # noqa: ANN204
        self.selections.append(list(selection))
        phase = out.name if out.parent.name != "culprits" else "culprit"

        def run(build, index: int) -> Start:  # noqa: ANN001
            if self.kill_after is not None and len(self.calls) >= self.kill_after:
                raise Killed(f"killed before start {index} of {build.name}")
            self.calls.append((phase, build.name))
            factor = self.slow_in.get(phase, {}).get(build.name, 1.0)
            speed = self.recorded.speed
            saved = speed.get(build.name)
            if saved is not None:
                speed[build.name] = saved * factor
            try:
                start = self.recorded(build, index)
            finally:
                if saved is not None:
                    speed[build.name] = saved
            start.folder = str(out / f"{build.name}-start-{index}")
            return start

        return run
