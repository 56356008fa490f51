"""TEST DOUBLE for the commands a workflow's run lines call, installed by tests/workflow_sim.py
as shims named after them (python3, python, pip, pytest-mi300x, docker). Every call is
appended to $SIM_JOURNAL. What each does:

- `pytest-mi300x`: the real command, always in a dry run. A command that starts servers
  (`night`, `night culprit`, `baselines refresh`) gets `--dry-run` when the line has none,
  and must list `--dry-run` in its `--help` (else exit 97: the line cannot be rehearsed);
  read-only commands (`plan`, `merge`, `night status`, `baselines show`, `report`) and
  `night sync` (whose remote in the rehearsal is a local bare repository) run as they are;
  any other exits 97. After a real dry run succeeded, it leaves what a real run
  leaves, from $SIM_OUTCOMES: for `night`, the host's `status=` step output, its exit code,
  a result folder under .perf-results/ (green, red, undecided) and a record in the state;
  for `baselines refresh --start K`, one more server start in each baseline.
- `python3 -m venv DIR`: DIR/bin with these shims; any other `python3` is the system's
  interpreter, without the harness (as on a fresh runner); `python` is the harness's.
- `pip install ...`: checks its arguments (an editable install names a folder with a
  pyproject.toml) and installs nothing: the harness is already installed.
- `docker`: journals and succeeds, printing nothing (no images).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HARNESS_PY = os.environ.get("SIM_HARNESS_PYTHON", sys.executable)
SYSTEM_PY = os.environ.get("SIM_SYSTEM_PYTHON", "/usr/bin/python3")
SERVER_STARTING = {("night",), ("night", "culprit"), ("baselines", "refresh")}
READ_ONLY = {("plan",), ("merge",), ("night", "status"), ("night", "sync"),
             ("baselines", "show"), ("report",)}


def journal(tool: str, argv: list[str], **extra: object) -> None:
    with open(os.environ["SIM_JOURNAL"], "a") as fh:
        fh.write(json.dumps({"tool": tool, "argv": argv, "cwd": os.getcwd(), **extra}) + "\n")


def command_of(argv: list[str]) -> tuple[str, ...]:
    if argv[:1] == ["night"] and argv[1:2] in (["culprit"], ["status"], ["sync"]):
        return tuple(argv[:2])
    if argv[:1] == ["baselines"]:
        return tuple(argv[:2])
    return tuple(argv[:1])


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def real(argv: list[str]) -> int:
    return subprocess.call([HARNESS_PY, "-m", "pytest_mi300x.cli", *argv])


def pytest_mi300x(argv: list[str]) -> int:
    cmd = command_of(argv)
    if cmd in READ_ONLY:
        journal("pytest-mi300x", argv, inserted_dry_run=False)
        return real(argv)
    if cmd not in SERVER_STARTING:
        journal("pytest-mi300x", argv, refused=True)
        print(f"workflow_tools: `pytest-mi300x {' '.join(cmd)}` is neither read-only nor "
              "able to run dry: this run line cannot be rehearsed", file=sys.stderr)
        return 97
    helptext = subprocess.run([HARNESS_PY, "-m", "pytest_mi300x.cli", *cmd, "--help"],
                              capture_output=True, text=True, check=False).stdout
    if "--dry-run" not in helptext:
        journal("pytest-mi300x", argv, refused=True)
        print(f"workflow_tools: `pytest-mi300x {' '.join(cmd)}` has no --dry-run: this run "
              "line cannot be rehearsed", file=sys.stderr)
        return 97
    inserted = "--dry-run" not in argv
    args = [*cmd, "--dry-run", *argv[len(cmd):]] if inserted else argv
    journal("pytest-mi300x", argv, inserted_dry_run=inserted)
    rc = real(args)
    if rc != 0:
        return rc
    if cmd == ("night",):
        return night_outcome(argv)
    if cmd == ("baselines", "refresh"):
        add_baseline_start(argv)
    return 0


def night_outcome(argv: list[str]) -> int:
    """What a real night on this host leaves: its status, exit code, results and record."""
    host = option(argv, "--gpu-host") or "cpu"
    outcomes = json.loads(os.environ.get("SIM_OUTCOMES", "{}"))
    status, code = outcomes.get(host, ["green", 0])
    with open(os.environ["GITHUB_OUTPUT"], "a") as fh:
        fh.write(f"status={status}\n")
    state = option(argv, "--state")
    if state:
        record = Path(state) / "hosts" / host / "nights.jsonl"
        record.parent.mkdir(parents=True, exist_ok=True)
        with record.open("a") as fh:
            fh.write(json.dumps({"host": host, "status": status}) + "\n")
    if status != "infra":
        from pytest_mi300x.results.files import result_path, write_json_atomic
        from pytest_mi300x.results.model import SCHEMA

        test = "suites/test_headline.py::test_headline[sim]"
        write_json_atomic(result_path(Path(".perf-results") / f"night-{host}", test), {
            "schema": SCHEMA, "test": test, "valid": True, "host": {"name": host},
            "engine": {"build": "docker:rocm/vllm-ci@sha256:0123"},
            "runs": [{"figures": {"request_throughput": 10.0}, "problems": []}],
            "gate": [{"status": "compared"}]})
    return int(code)


def add_baseline_start(argv: list[str]) -> None:
    """One server start's repetitions, added as a real start adds them."""
    from pytest_mi300x.judge.baselines import Baseline, BaselineStore

    start = int(option(argv, "--start") or 1)
    host = option(argv, "--gpu-host") or "cpu"
    store = BaselineStore(Path(option(argv, "--baselines-dir") or "baselines"))
    test = "suites/test_headline.py::test_headline[sim]"
    old = store.load(host, "vllm", "llama-3.1-70b", test) if start > 1 else None
    reps = [{"request_throughput": 10.0}, {"request_throughput": 10.2}]
    servers = [*(old.server_of if old else []), *[old.server_count if old else 0] * 2]
    store.save(Baseline(test=test, host=host, engine="vllm", model="llama-3.1-70b",
                        repetitions=[*(old.repetitions if old else []), *reps],
                        servers=servers, comparability={}))


def make_venv(target: Path) -> int:
    """`python3 -m venv DIR`: DIR/bin holds the shims (the harness is already installed)."""
    shims = Path(os.environ["SIM_SHIMS"])
    (target / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("python", "pip", "pytest-mi300x"):
        link = target / "bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(shims / name)
    return 0


def pip(argv: list[str]) -> int:
    journal("pip", argv)
    if argv[:1] != ["install"]:
        print(f"workflow_tools: pip {argv[:1]} is not rehearsed", file=sys.stderr)
        return 97
    args = [a for a in argv[1:] if a not in ("-q", "--quiet", "-U", "--upgrade")]
    for i, arg in enumerate(args):
        if arg == "-e":
            folder = args[i + 1].split("[", 1)[0]
            if not (Path(folder) / "pyproject.toml").is_file():
                print(f"pip: {folder} has no pyproject.toml", file=sys.stderr)
                return 1
    print(f"(rehearsal) pip install {' '.join(args)}: the harness is installed already")
    return 0


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    if tool == "pytest-mi300x":
        return pytest_mi300x(argv)
    if tool == "pip" or (tool in ("python", "python3") and argv[:2] == ["-m", "pip"]):
        return pip(argv[2:] if argv[:2] == ["-m", "pip"] else argv)
    if tool == "python3" and argv[:2] == ["-m", "venv"]:
        journal("python3", argv)
        return make_venv(Path(argv[-1]))
    if tool in ("python", "python3"):
        os.execv(HARNESS_PY if tool == "python" else SYSTEM_PY,
                 [HARNESS_PY if tool == "python" else SYSTEM_PY, *argv])
    journal(tool, argv)
    return 0  # docker: no images, nothing to do


if __name__ == "__main__":
    sys.exit(main())
