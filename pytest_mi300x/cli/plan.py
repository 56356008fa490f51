"""``pytest-mi300x plan [--json PATH] [pytest args]``: every server the selection would start,
with nothing started (pytest ``--mi300x-plan``; see pytest_mi300x/plan.py)."""

from __future__ import annotations

import sys

USAGE = """usage: pytest-mi300x plan [--json PATH] [pytest args]

Print every server the selected tests would start: engine, build, model, flag set, the
GPUs it would lease and their visibility env, the full command line and env (secrets
redacted), how it is stopped, and the tests it serves. Nothing is started, installed,
pulled or inspected: no server, pip, docker or GPU tool runs.

  --json PATH   also write the plan as JSON
  pytest args   the selection, as for pytest (default: suites/), e.g.
                pytest-mi300x plan suites/ --gpu-host mi300x-01 --vllm-build docker:IMAGE
"""


def run(args: list[str]) -> int:
    import pytest

    if {"-h", "--help"} & set(args):
        print(USAGE, end="")
        return 0
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--json":
            target = next(it, None)
            if target is None:
                print("pytest-mi300x plan: --json needs a PATH", file=sys.stderr)
                return 2
            rest += ["--mi300x-plan-json", target]
        elif arg.startswith("--json="):
            rest += ["--mi300x-plan-json", arg.split("=", 1)[1]]
        else:
            rest.append(arg)
    if not any(not a.startswith("-") for a in args):
        rest.append("suites/")
    return int(pytest.main(["--mi300x-plan", "-q", "-p", "no:cacheprovider", *rest]))
