"""TEST DOUBLE of a start runner for ``ab`` and ``bisect``: each build has a true speed; a
start draws its own offset (start-to-start noise) and each run a little more (run-to-run
noise). A build listed in ``broken`` measures nothing (it does not start). ``delay`` makes
each start take that long (for tests that kill a bisect mid-run). The real engine runs the
same procedures in tests/test_ab_engine.py."""

from __future__ import annotations

import math
import random
import time

from pytest_mi300x.ab.starts import Runs, Start

TEST = "suites/t.py::test_burst"
FLOORS = {"request_throughput": 5.0, "median_ttft_ms": 5.0}


class RecordedStarts:
    def __init__(self, speed: dict[str, float], seed: int = 1, between: float = 0.01,
                 within: float = 0.01, runs: int = 3, host_noise: float | None = 1.0,
                 broken: tuple[str, ...] = (), delay: float = 0.0,
                 tests: tuple[str, ...] = (TEST,), store_key: tuple[str, ...] = (),
                 stack: dict | None = None) -> None:
        self.speed, self.rng = speed, random.Random(seed)
        self.between, self.within, self.runs = between, within, runs
        self.host_noise, self.broken, self.delay, self.tests = host_noise, broken, delay, tests
        self.store_key, self.stack = list(store_key), stack or {}
        """Where the tests' baselines are kept, and their stack, as a real start records."""
        self.calls: list[str] = []

    def __call__(self, build, index: int) -> Start:
        self.calls.append(build.name)
        if self.delay:
            time.sleep(self.delay)
        if build.name in self.broken:
            return Start(build.name, index, f"/tmp/{build.name}-{index}", 1, 1.0,
                         {t: Runs([], problems=["server exited during start-up"])
                          for t in self.tests})
        tests = {}
        for test in self.tests:
            offset = self.rng.gauss(0, self.between)
            reps = []
            for _ in range(self.runs):
                f = self.speed[build.name] * math.exp(offset + self.rng.gauss(0, self.within))
                reps.append({"request_throughput": 100 * f, "output_throughput": 6400 * f,
                             "median_ttft_ms": 50 / f})
            noise = dict.fromkeys(FLOORS, self.host_noise) if self.host_noise else {}
            tests[test] = Runs(reps, dict(FLOORS), noise, [], self.store_key, self.stack)
        return Start(build.name, index, f"/tmp/{build.name}-{index}", 0, 1.0, tests)
