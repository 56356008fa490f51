"""``pytest-mi300x plan [--json PATH] [pytest args]``: every server the selection would start,
with nothing started (pytest ``--mi300x-plan``; see pytest_mi300x/plan.py)."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = """usage: pytest-mi300x plan [--json PATH] [pytest args]

Print every server the selected tests would start: engine, build, model, flag set, the
GPUs it would lease and their visibility env, the full command line and env (secrets
redacted), how it is stopped, and the tests it serves. Nothing is started, installed,
pulled or inspected: no server, pip, docker or GPU tool runs.

  --json PATH   also write the plan as JSON
  --night       estimate a night's server starts and minutes on the host instead (from
                the plan and the start times of --state DIR; pytest_mi300x/night/estimate.py)
  pytest args   the selection, as for pytest (default: suites/), e.g.
                pytest-mi300x plan suites/ --gpu-host mi300x-01 --vllm-build docker:IMAGE
"""


def run(args: list[str]) -> int:
    import pytest

    if {"-h", "--help"} & set(args):
        print(USAGE, end="")
        return 0
    if "--night" in args:
        from pytest_mi300x.night import estimate

        return estimate.run([a for a in args if a != "--night"])
    rest: list[str] = []
    json_target: str | None = None
    it = iter(args)
    for arg in it:
        if arg == "--json":
            json_target = next(it, None)
            if json_target is None:
                print("pytest-mi300x plan: --json needs a PATH", file=sys.stderr)
                return 2
        elif arg.startswith("--json="):
            json_target = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if json_target is not None:
        rest.append(f"--mi300x-plan-json={json_target}")
    if not any(Path(a.split("::")[0]).exists() for a in rest if not a.startswith("-")
               and a != json_target):
        rest.append("suites/")  # no test path given (option values are not paths)
    return int(pytest.main(["--mi300x-plan", "-q", "-p", "no:cacheprovider", *rest]))
