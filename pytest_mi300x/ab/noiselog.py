"""The tests' noise records as ``ab``, ``bisect``, ``culprit`` and ``steadiness`` use them:
read where the starts measured here have no spread of their own, compared with today's
spread (is this machine noisier than the test's record?), and taught what these starts
showed.

Records live with the baselines (judge/baselines.py): a test's record is its baseline's
starts plus the evidence stored beside them, kept per host, engine and model, and only used
on the same setup (hardware, workload, flag set).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.starts import Record
from pytest_mi300x.judge.baselines import BaselineError, BaselineStore
from pytest_mi300x.judge.multiplicity import family_of
from pytest_mi300x.judge.noise import AGREEMENT_LEVEL, SumSq, agreement, start_logs, sumsq_of
from pytest_mi300x.judge.records import entry
from pytest_mi300x.results.metrics import GATED_METRICS
from pytest_mi300x.results.stack import setup_of


class NoiseLog:
    """The stored noise records of the tests in one record of starts."""

    def __init__(self, record: Record, baselines_dir: Path) -> None:
        self.record = record
        self.store = BaselineStore(baselines_dir)
        self._cache: dict[str, dict[str, SumSq]] = {}

    def records(self, test: str) -> dict[str, SumSq]:
        """The test's stored evidence per metric; empty when it has none on this setup."""
        if test not in self._cache:
            self._cache[test] = self._load(test)
        return self._cache[test]

    def _load(self, test: str) -> dict[str, SumSq]:
        found = self.record.key_of(test)
        if found is None:
            return {}
        (host, engine, model), stack = found
        try:
            stored = self.store.load(host, engine, model, test)
        except BaselineError:
            return {}
        if stored is None or setup_of(stored.comparability) != setup_of(stack):
            return {}
        return stored.full_record()

    def _groups(self, builds: tuple[Build, ...], test: str, metric: str) -> list[list[float]]:
        """Per build, each start's value (the median of its runs), as the verdicts take it."""
        return [[math.exp(v) for v in start_logs(self.record.runs(build, test, metric))]
                for build in builds]

    def today(self, *builds: Build) -> dict[str, dict[str, SumSq]]:
        """Per test and gated family, what these starts show of the spread (within each
        build)."""
        return {test: {metric: sumsq_of([[math.log(v) for v in g]
                                         for g in self._groups(builds, test, metric)])
                       for metric in _families(self.record, test)}
                for test in self.record.tests()}

    def steadiness_lines(self, *builds: Build) -> list[str]:
        """Per test, today's start-to-start spread (within each build) against its record:
        a machine noisier than the record says so."""
        lines = []
        for test in self.record.tests():
            stored = self.records(test)
            parts = []
            for metric in _families(self.record, test):
                today = sumsq_of([[math.log(v) for v in g]
                                  for g in self._groups(builds, test, metric)])
                mine = today.spread("today")
                if mine is None:
                    continue
                text = f"{metric} {mine.pct:.1f}% (df {mine.df:g})"
                past = stored.get(metric, SumSq()).spread("record")
                if past is not None:
                    p = agreement(mine, past)
                    word = ("noisier than" if mine.sd > past.sd else "steadier than") \
                        if p < AGREEMENT_LEVEL else "in line with"
                    text += f", {word} its record {past.pct:.1f}% (df {past.df:g}, p={p:.2g})"
                parts.append(text)
            if parts:
                lines.append(f"this machine today, {test}: starts spread " + "; ".join(parts)
                             + ("" if stored else " (no stored record on this setup)"))
        return lines

    def learn(self, *builds: Build, source: str) -> list[str]:
        """Add what these starts showed (within each build) to each test's stored record."""
        lines = []
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for test in self.record.tests():
            found = self.record.key_of(test)
            if found is None:
                continue
            (host, engine, model), stack = found
            taught = entry(source, date, {m: self._groups(builds, test, m)
                                          for m in sorted(GATED_METRICS)})
            path = self.store.add_noise(host, engine, model, test, taught, stack)
            if path is not None:
                df = max((int(v[1]) for v in taught["metrics"].values()), default=0)
                lines.append(f"noise record of {test}: +{df} df from these starts ({path})")
                self._cache.pop(test, None)
        return lines


def _families(record: Record, test: str) -> list[str]:
    """One metric per gated family measured in the test."""
    seen: dict[str, str] = {}
    for start in record.starts:
        runs = start.tests.get(test)
        for rep in runs.reps if runs else ():
            for metric in rep:
                # request_throughput speaks for the throughput family
                if metric in GATED_METRICS and seen.get(family_of(metric)) != \
                        "request_throughput":
                    seen[family_of(metric)] = metric
    return sorted(seen.values())
