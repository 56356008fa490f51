"""``pytest-mi300x plan --night``: a night's server starts and minutes on a host, before
it runs.

The plan (plan.py) says how many servers and tests one start of the selection has; the
state's recorded start timings (every start a night ran on the host) say how long a start
of them takes: their median seconds per test, times the tests. Without records the
estimate uses figures per server start and per test: measured on the cpu host
(docs/measurements.md: a server start 28 s median, a test's load about 23 s), estimated
for an 8x MI300X host (nothing has run on one: a 70B model at TP 8 loads and captures its
graphs in about 5-10 min, 7.5 taken; a test's load at full size about 2-3 min, 2.5 taken),
divided by the servers the host runs at once.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_SERVER_S, CPU_TEST_S = 28.0, 23.0
GPU_SERVER_S, GPU_TEST_S = 450.0, 150.0


@dataclass(frozen=True)
class StartCost:
    servers: int
    tests: int
    seconds: float
    source: str


def start_cost(servers: int, tests: int, timings: list[dict[str, Any]], has_gpus: bool,
               at_once: int = 1) -> StartCost:
    rates = [float(t["seconds"]) / int(t["tests"]) for t in timings
             if isinstance(t.get("seconds"), int | float) and int(t.get("tests") or 0) > 0]
    if rates:
        per_test = statistics.median(rates)
        return StartCost(servers, tests, per_test * tests,
                         f"{len(rates)} recorded start(s) on this host: {per_test:.0f} s a "
                         "test")
    server_s, test_s = (GPU_SERVER_S, GPU_TEST_S) if has_gpus else (CPU_SERVER_S, CPU_TEST_S)
    seconds = (servers * server_s + tests * test_s) / max(1, at_once)
    where = "an 8x MI300X host, estimated" if has_gpus else "the cpu host, measured"
    return StartCost(servers, tests, seconds,
                     f"no recorded start: {server_s / 60:.1f} min a server and "
                     f"{test_s / 60:.1f} min a test ({where}), {at_once} server(s) at once")


def lines(host: str, full: StartCost, probe: StartCost, *, steadiness_starts: int,
          gate_starts: int, adopt_starts: int, budget_starts: int, deadline_min: float,
          culprit: str) -> list[str]:
    def minutes(s: float) -> str:
        return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"

    gate = steadiness_starts * probe.seconds + gate_starts * full.seconds
    worst = gate + budget_starts * full.seconds
    fits = worst <= deadline_min * 60
    out = [f"night estimate on {host}: one start of the selection is {full.servers} "
           f"server(s) and {full.tests} test(s), about {minutes(full.seconds)} "
           f"({full.source})",
           f"  first night (adopts its build): {adopt_starts} starts, about "
           f"{minutes(adopt_starts * full.seconds)}",
           f"  a night decided at the gate: {steadiness_starts} reference start(s) of "
           f"{probe.tests} test(s) around {gate_starts} of tonight's: "
           f"{steadiness_starts + gate_starts} starts, about {minutes(gate)}",
           f"  a night whose every test goes head to head (--budget-starts {budget_starts}): "
           f"{steadiness_starts + gate_starts + budget_starts} starts, about "
           f"{minutes(worst)} (only the red or undecided tests run again: usually far less)",
           f"  the night's time limit: {minutes(deadline_min * 60)}: "
           + ("the worst case fits" if fits else
              "the worst case does not fit, so the limit stops head-to-head starts in time "
              "(tests left undecided say so)")]
    limit = deadline_min * 60
    adopt = adopt_starts * full.seconds
    if gate > limit * 0.5 or adopt > limit:
        shards = math.ceil(max(gate / (limit * 0.5), adopt / limit))
        out.append(f"  over the limit by design: shard the suite over {shards} hosts of this "
                   f"kind (--shard i/{shards}, each host its own state): tonight's starts "
                   f"then take about {minutes(gate / shards)} of a night, leaving half of it "
                   "for head to head, and the first night's adoption fits one night")
    out.append(f"  culprit search ({culprit}): about {2 * 3}-{2 * 6} starts of the failing "
               "tests per build bisected, plus a final pair of 6-12; "
               + ("inline it shares the night's time limit" if culprit == "inline" else
                  "deferred, it runs in its own job (`pytest-mi300x night culprit`)"))
    return out


def plan_doc(pytest_args: list[str]) -> dict[str, Any]:
    """The plan of a selection as JSON, with nothing started (``pytest --mi300x-plan``)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "plan.json"
        done = subprocess.run([sys.executable, "-m", "pytest", "--mi300x-plan", "-q", "-p",
                               "no:cacheprovider", f"--mi300x-plan-json={target}",
                               *pytest_args], capture_output=True, text=True, check=False)
        if not target.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise RuntimeError("the plan could not be made: " + " / ".join(tail))
        doc: dict[str, Any] = json.loads(target.read_text())
        return doc


def counts(doc: dict[str, Any]) -> tuple[int, int]:
    servers = doc.get("servers") or []
    return len(servers), len({t for s in servers for t in s.get("tests", [])})


def run(args: list[str]) -> int:
    """``plan --night [--state DIR] [pytest args]``."""
    from pytest_mi300x.hosts.profile import HostConfigError
    from pytest_mi300x.hosts.toml import select_host
    from pytest_mi300x.night.command import Options, hosts_path, settings_for
    from pytest_mi300x.night.state import State, StateError

    state: Path | None = None
    taken: dict[str, str] = {"--state": "", "--gpu-host": "cpu", "--hosts-file": ""}
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag in taken:
            taken[flag] = value if eq else next(it, "")
        else:
            rest.append(arg)
    state = Path(taken["--state"]) if taken["--state"] else None
    host, hosts_file = taken["--gpu-host"], taken["--hosts-file"] or None
    try:
        profile = select_host(host, hosts_path(hosts_file))
        settings, _ = settings_for(Options(host=host, hosts_file=hosts_file, selection=rest),
                                   profile.has_gpus)
        timings = State(state).host(profile.name).timings()
        full_doc = plan_doc([*settings.tests, *settings.options])
        probe_doc = plan_doc([*(settings.steadiness_tests or settings.tests), *settings.options])
    except (HostConfigError, StateError, RuntimeError) as exc:
        print(f"pytest-mi300x plan --night: {exc}", file=sys.stderr)
        return 2
    at_once = profile.servers_at_once() if profile.has_gpus else 1
    full = start_cost(*counts(full_doc), timings, profile.has_gpus, at_once)
    probe = start_cost(*counts(probe_doc), timings, profile.has_gpus, at_once)
    for line in lines(profile.name, full, probe, steadiness_starts=settings.steadiness_starts,
                      gate_starts=settings.gate_starts, adopt_starts=settings.adopt_starts,
                      budget_starts=settings.budget_starts,
                      deadline_min=settings.deadline_s / 60, culprit=settings.culprit):
        print(line)
    return 0
