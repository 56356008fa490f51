"""A workflow run rehearsed here, job by job, as GitHub's runners would run it: for
tests/test_workflows.py, so that every `run:` line is executed with realistic contexts and
the class of bug that crashed the culprit job (a run line the command cannot parse) fails a
test instead of a night.

What is real: the YAML; `needs`, job and step `if:`, matrices from job outputs, `env`,
`${{ }}` expressions (tests/workflow_expressions.py); each run line, rendered and executed by
bash as the runner does (`shell: bash` is `bash --noprofile --norc -eo pipefail`) in a fresh
copy of the repository per job, with $GITHUB_OUTPUT, $GITHUB_ENV and $GITHUB_STEP_SUMMARY; a
home folder that persists per self-hosted runner and is new for each hosted job; artifacts
between jobs (upload-artifact's hidden-file rule, overwrite and if-no-files-found;
download-artifact's name, pattern and merge-multiple). What is not: the commands a run line
calls are tests/doubles/workflow_tools.py (the real `pytest-mi300x`, in a dry run),
checkout/setup-python/cache are the copy already made, and concurrency groups are recorded,
not enforced.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.workflow_expressions import condition, evaluate, substitute, to_str

ROOT = Path(__file__).parent.parent
TOOLS = ROOT / "tests" / "doubles" / "workflow_tools.py"
SHIMS = ("python3", "python", "pip", "pytest-mi300x", "docker")


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as true
        doc["on"] = doc.pop(True)
    return dict(doc)


def evaluated(value: Any, ctx: dict[str, Any]) -> Any:
    """A YAML value with its expressions evaluated (a lone `${{ }}` keeps its type)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("${{") and text.endswith("}}") and text.count("${{") == 1:
            return evaluate(text[3:-2], ctx)
        return substitute(value, ctx)
    if isinstance(value, list):
        return [evaluated(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: evaluated(v, ctx) for k, v in value.items()}
    return value


def read_commands_file(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT / $GITHUB_ENV: NAME=value lines and NAME<<DELIM heredocs."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body = list(itertools.takewhile(lambda x, d=delim: x != d, lines))
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


@dataclass
class JobRun:
    job: str
    matrix: dict[str, Any]
    result: str = "skipped"
    outputs: dict[str, str] = field(default_factory=dict)
    concurrency: str | None = None
    runner: str = ""
    steps: list[tuple[str, str]] = field(default_factory=list)
    """(step name, conclusion) in order."""
    summary: str = ""
    log: str = ""


class WorkflowRun:
    def __init__(self, workflow: Path, tmp: Path, *, event: str,
                 inputs: dict[str, Any] | None = None, vars: dict[str, str] | None = None,
                 secrets: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 checked_only: dict[str, str] | None = None,
                 fleet: list[str] | None = None) -> None:
        """``checked_only``: run lines (by step name) that must not run here, with the reason
        (the test suite's own command): they are checked with `bash -n` instead. ``fleet``:
        hosts the checkout's hosts.toml defines as based on mi300x-01 (one kind of host)."""
        self.doc = load(workflow)
        self.tmp = tmp
        self.event = event
        declared = (self.doc["on"].get("workflow_dispatch") or {}).get("inputs", {}) \
            if event == "workflow_dispatch" else {}
        self.inputs = {k: v.get("default") for k, v in declared.items()}
        self.inputs.update(inputs or {})
        self.vars = vars or {}
        self.secrets = {"GITHUB_TOKEN": "ghs_simtoken0123", **(secrets or {})}
        self.extra_env = env or {}
        self.checked_only = checked_only or {}
        self.journal = tmp / "journal.jsonl"
        self.artifacts = tmp / "artifacts"
        self.repo = tmp / "repo"
        self.shims = tmp / "shims"
        self.runs: dict[str, list[JobRun]] = {}
        self.fleet = [h for h in fleet or [] if h != "mi300x-01"]
        self._copy_repository()
        self._make_shims()

    # -- setup ------------------------------------------------------------------------

    def _copy_repository(self) -> None:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode().split("\0")
        for rel in filter(None, listed):
            src = ROOT / rel
            if src.is_file():
                (self.repo / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, self.repo / rel)
        hosts = self.repo / "hosts.toml"
        hosts.write_text(hosts.read_text() + "".join(
            f'\n[hosts.{h}]\nbased_on = "mi300x-01"\n' for h in self.fleet))
        # A checkout is a git repository (actionlint, for one, looks for it).
        for cmd in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=sim", "-c", "user.email=sim@invalid", "commit", "-q",
                     "--no-verify", "-m", "checkout"]):
            subprocess.run(["git", *cmd], cwd=self.repo, capture_output=True, check=True)

    def _make_shims(self) -> None:
        self.shims.mkdir(parents=True)
        for name in SHIMS:
            shim = self.shims / name
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TOOLS}" {name} "$@"\n')
            shim.chmod(0o755)

    # -- the run ----------------------------------------------------------------------

    def run(self) -> dict[str, list[JobRun]]:
        jobs: dict[str, Any] = self.doc["jobs"]
        done: set[str] = set()
        while len(done) < len(jobs):
            ready = [j for j in jobs if j not in done and set(self._needs(jobs[j])) <= done]
            if not ready:
                raise ValueError(f"jobs with needs that never finish: {set(jobs) - done}")
            for job_id in ready:
                self.runs[job_id] = self._run_job(job_id, jobs[job_id])
                done.add(job_id)
        return self.runs

    @staticmethod
    def _needs(job: dict[str, Any]) -> list[str]:
        needs = job.get("needs", [])
        return [needs] if isinstance(needs, str) else list(needs)

    def result(self, job_id: str) -> str:
        runs = self.runs[job_id]
        results = {r.result for r in runs}
        if "failure" in results:
            return "failure"
        return "success" if "success" in results else "skipped"

    def _base_ctx(self) -> dict[str, Any]:
        return {"github": {"event_name": self.event, "repository": "amd/pytest-mi300x",
                           "repository_owner": "amd", "run_id": "4242", "ref": "refs/heads/main",
                           "server_url": self._server_url(), "token": self.secrets["GITHUB_TOKEN"]},
                "inputs": self.inputs, "vars": self.vars, "secrets": self.secrets,
                "runner": {"os": "Linux", "temp": str(self.tmp / "runner-temp")},
                "env": {}, "matrix": {}, "needs": {}, "steps": {}, "strategy": {}, "job": {}}

    def _server_url(self) -> str:
        return self.extra_env.get("GITHUB_SERVER_URL", "https://github.com")

    def _run_job(self, job_id: str, job: dict[str, Any]) -> list[JobRun]:
        ctx = self._base_ctx()
        ctx["needs"] = {n: {"result": self.result(n), "outputs": self._outputs(n)}
                        for n in self._needs(job)}
        status = {"success": all(v["result"] == "success" for v in ctx["needs"].values()),
                  "failure": any(v["result"] == "failure" for v in ctx["needs"].values())}
        if not condition(job.get("if"), ctx, status):
            return [JobRun(job_id, {})]
        ctx["env"] = {k: to_str(v) for k, v in
                      evaluated(self.doc.get("env", {}), ctx).items()}
        matrix = evaluated((job.get("strategy") or {}).get("matrix", {}), ctx)
        if any(isinstance(v, list) and not v for v in matrix.values()):
            return [JobRun(job_id, {}, result="failure",
                           log="matrix with an empty vector: GitHub fails the job")]
        combos = [dict(zip(matrix, values, strict=True))
                  for values in itertools.product(*matrix.values())] if matrix else [{}]
        return [self._run_leg(job_id, job, {**ctx, "matrix": combo}) for combo in combos]

    def _outputs(self, job_id: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for run in self.runs[job_id]:
            merged.update(run.outputs)  # a matrix job keeps the last leg's (as GitHub does)
        return merged

    def _run_leg(self, job_id: str, job: dict[str, Any], ctx: dict[str, Any]) -> JobRun:
        run = JobRun(job_id, ctx["matrix"], result="success")
        labels = evaluated(job.get("runs-on"), ctx)
        labels = [labels] if isinstance(labels, str) else list(labels)
        self_hosted = "self-hosted" in labels
        run.runner = next((x for x in labels if str(x).startswith("gpu-")), "hosted")
        home = (self.tmp / "runners" / run.runner / "home" if self_hosted
                else self.tmp / "hosted" / f"{job_id}-{len(self.runs.get(job_id, []))}-"
                f"{os.urandom(3).hex()}")
        home.mkdir(parents=True, exist_ok=True)
        workspace = home.parent / "work" / f"{job_id}-{abs(hash(json.dumps(ctx['matrix'])))}"
        shutil.rmtree(workspace, ignore_errors=True)
        shutil.copytree(self.repo, workspace)
        concurrency = job.get("concurrency")
        if concurrency is not None:
            group = concurrency["group"] if isinstance(concurrency, dict) else concurrency
            run.concurrency = to_str(evaluated(group, ctx))
        env = {**ctx["env"], **{k: to_str(v) for k, v in
                                evaluated(job.get("env", {}), ctx).items()}}
        defaults = ((self.doc.get("defaults") or {}).get("run") or {}).get("shell")
        failed = False
        for n, step in enumerate(job.get("steps", [])):
            name = step.get("name") or step.get("uses") or f"step {n}"
            ctx = {**ctx, "env": env}
            if not condition(step.get("if"), ctx, {"success": not failed, "failure": failed}):
                run.steps.append((name, "skipped"))
                if step.get("id"):
                    ctx["steps"] = {**ctx["steps"], step["id"]: {
                        "outcome": "skipped", "conclusion": "skipped", "outputs": {}}}
                continue
            step_env = {**env, **{k: to_str(v) for k, v in
                                  evaluated(step.get("env", {}), ctx).items()}}
            files = {k: home.parent / "files" / f"{job_id}-{n}-{k}" for k in
                     ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_STEP_SUMMARY")}
            for path in files.values():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")
            if "run" in step:
                ok = self._run_script(step, name, ctx, step_env, files, workspace, home,
                                      step.get("shell") or defaults, run)
            else:
                ok = self._use_action(step, ctx, workspace, run)
            outputs = read_commands_file(files["GITHUB_OUTPUT"])
            env.update(read_commands_file(files["GITHUB_ENV"]))
            run.summary += files["GITHUB_STEP_SUMMARY"].read_text()
            outcome = "success" if ok else "failure"
            conclusion = "success" if ok or step.get("continue-on-error") else "failure"
            failed = failed or conclusion == "failure"
            run.steps.append((name, conclusion))
            if step.get("id"):
                ctx["steps"] = {**ctx["steps"], step["id"]: {
                    "outcome": outcome, "conclusion": conclusion, "outputs": outputs}}
        ctx = {**ctx, "env": env}
        run.outputs = {k: to_str(evaluated(v, ctx))
                       for k, v in (job.get("outputs") or {}).items()}
        run.result = "failure" if failed else "success"
        return run

    def _run_script(self, step: dict[str, Any], name: str, ctx: dict[str, Any],
                    env: dict[str, str], files: dict[str, Path], workspace: Path, home: Path,
                    shell: str | None, run: JobRun) -> bool:
        script = substitute(step["run"], ctx)
        path = home.parent / "files" / f"script-{abs(hash(script))}.sh"
        path.write_text(script)
        bash = (["bash", "--noprofile", "--norc", "-eo", "pipefail"] if shell == "bash"
                else ["bash", "-e"])
        if name in self.checked_only:
            proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True,
                                  check=False)
            run.log += f"$ {name} (checked only: {self.checked_only[name]})\n{proc.stderr}"
            return proc.returncode == 0
        full_env = {
            "PATH": f"{self.shims}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home), "CI": "true", "LANG": "C.UTF-8",
            "GITHUB_WORKSPACE": str(workspace), "GITHUB_REPOSITORY": "amd/pytest-mi300x",
            "GITHUB_RUN_ID": "4242", "GITHUB_EVENT_NAME": self.event,
            "GITHUB_SERVER_URL": self._server_url(),
            "GITHUB_API_URL": "http://127.0.0.1:9", "RUNNER_TEMP": str(home.parent / "temp"),
            "SIM_JOURNAL": str(self.journal), "SIM_SHIMS": str(self.shims),
            "SIM_HARNESS_PYTHON": sys.executable,
            **{k: str(v) for k, v in files.items()}, **self.extra_env, **env}
        proc = subprocess.run([*bash, str(path)], cwd=workspace, env=full_env,
                              capture_output=True, text=True, timeout=600, check=False)
        run.log += f"$ {name}\n{proc.stdout}{proc.stderr}(exit {proc.returncode})\n"
        return proc.returncode == 0

    # -- actions ----------------------------------------------------------------------

    def _use_action(self, step: dict[str, Any], ctx: dict[str, Any], workspace: Path,
                    run: JobRun) -> bool:
        action = step["uses"].split("@", 1)[0]
        given = {k: to_str(v) for k, v in evaluated(step.get("with", {}), ctx).items()}
        if action in ("actions/checkout", "actions/setup-python", "actions/cache"):
            return True  # the copy of the repository is the checkout
        if action == "actions/upload-artifact":
            return self._upload(given, workspace, run)
        if action == "actions/download-artifact":
            return self._download(given, workspace, run)
        run.log += f"unknown action {action}: not rehearsed\n"
        return False

    def _upload(self, given: dict[str, str], workspace: Path, run: JobRun) -> bool:
        name = given.get("name", "artifact")
        roots = [workspace / os.path.expanduser(p.strip())
                 for p in given["path"].splitlines() if p.strip()]
        hidden_ok = given.get("include-hidden-files", "false") == "true"
        files: list[tuple[Path, Path]] = []
        base = Path(os.path.commonpath([r if r.is_dir() else r.parent for r in roots])) \
            if len(roots) > 1 else (roots[0] if roots[0].is_dir() else roots[0].parent)
        for root in roots:
            found = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else \
                [root] if root.is_file() else []
            for path in found:
                below = path.relative_to(root).parts if root.is_dir() else ()
                if not hidden_ok and any(p.startswith(".") for p in (root.name, *below)):
                    continue
                files.append((path, path.relative_to(base)))
        if not files:
            policy = given.get("if-no-files-found", "warn")
            run.log += f"upload {name}: no files ({policy})\n"
            return policy != "error"
        target = self.artifacts / name
        if target.exists() and given.get("overwrite", "false") != "true":
            run.log += f"upload {name}: an artifact of this name exists already\n"
            return False
        shutil.rmtree(target, ignore_errors=True)
        for path, rel in files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / rel)
        return True

    def _download(self, given: dict[str, str], workspace: Path, run: JobRun) -> bool:
        dest = workspace / os.path.expanduser(given.get("path", "."))
        names = sorted(p.name for p in self.artifacts.iterdir()) if self.artifacts.exists() \
            else []
        if "name" in given:
            if given["name"] not in names:
                run.log += f"download {given['name']}: no such artifact\n"
                return False
            shutil.copytree(self.artifacts / given["name"], dest, dirs_exist_ok=True)
            return True
        merge = given.get("merge-multiple", "false") == "true"
        for name in fnmatch.filter(names, given.get("pattern", "*")):
            shutil.copytree(self.artifacts / name, dest if merge else dest / name,
                            dirs_exist_ok=True)
        return True

    # -- what the tests read ----------------------------------------------------------

    def calls(self, tool: str = "pytest-mi300x") -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        lines = (json.loads(x) for x in self.journal.read_text().splitlines())
        return [c for c in lines if c["tool"] == tool]
