"""``--mi300x-plan``: the session's collection ends in the plan of its servers (plan.py),
printed and optionally written as JSON, and no test runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mi300x.engines.flags import DEFAULT_FLAGS, FlagSet
from pytest_mi300x.plugin.fixtures import DEFAULT_ENGINE, DEFAULT_MODEL
from pytest_mi300x.plugin.scheduling import (
    CLAIM_FIXTURE,
    SERVER_FIXTURE,
    flag_set_on_host,
    strip_group,
)

if TYPE_CHECKING:
    from pytest_mi300x.plan import Plan, ServerRequest
    from pytest_mi300x.session import PerfSession


def planning(config: pytest.Config) -> bool:
    return bool(config.getoption("mi300x_plan", False)
                or config.getoption("mi300x_plan_json", None))


def run_nothing_in_parallel(config: pytest.Config) -> None:
    """A plan starts no xdist worker either (called after xdist read -n)."""
    if planning(config) and hasattr(config.option, "dist"):
        config.option.dist = "no"
        config.option.tx = []


def requests(items: list[pytest.Item], session: PerfSession | None = None
             ) -> list[ServerRequest]:
    """What each test's ``llm_server`` would ask for, from its parameters.

    A test that parametrizes ``serving_engine``, ``served_model`` or ``flag_set`` (directly
    or through a fixture's params) is planned with those values; one that does not gets the
    plugin's defaults, since the plan runs no fixture (a conftest fixture that overrides
    them without parameters is not seen). With ``session``, each test's body is dry-run for
    the workloads it would measure (plugin/dryrun.py), which the plan checks against the
    host's roofline.
    """
    from pytest_mi300x.plan import ServerRequest
    from pytest_mi300x.plugin.dryrun import DryRun, dry_run

    out = []
    for item in items:
        if SERVER_FIXTURE not in getattr(item, "fixturenames", ()):
            continue
        callspec = getattr(item, "callspec", None)
        params: dict[str, Any] = callspec.params if callspec is not None else {}
        flag_set = params.get("flag_set", DEFAULT_FLAGS)
        if not isinstance(flag_set, FlagSet):
            flag_set = DEFAULT_FLAGS
        flag_set = flag_set_on_host(item, flag_set)  # the seed's TP for the case
        dry = dry_run(item, session) if session is not None else DryRun()
        out.append(ServerRequest(
            test=strip_group(item.nodeid, item),
            engine=str(params.get("serving_engine", DEFAULT_ENGINE)),
            model=str(params.get("served_model", DEFAULT_MODEL)),
            flag_set=flag_set,
            accelerators=tuple(a for m in item.iter_markers("accelerator") for a in m.args),
            instances=int(params.get("server_instances", 1)),
            workloads=tuple(dry.workloads), dry_run_note=dry.note))
    return out


def claims(items: list[pytest.Item]) -> list[str]:
    """Claim tests: no server of their own, they judge the tests they compare."""
    return [strip_group(item.nodeid, item) for item in items
            if CLAIM_FIXTURE in getattr(item, "fixturenames", ())
            and SERVER_FIXTURE not in getattr(item, "fixturenames", ())]


def show(config: pytest.Config, session: PerfSession, items: list[pytest.Item]) -> Plan:
    """Plan the collected items, print the plan and write its JSON if asked."""
    from pytest_mi300x.plan import make_plan

    plan = make_plan(session, requests(items, session), claims(items))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for line in plan.lines():
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line)
    target = config.getoption("mi300x_plan_json", None)
    if target:
        from pytest_mi300x.results.files import WriteError, write_text_atomic

        try:  # the one writer: every known secret hidden
            write_text_atomic(Path(target), json.dumps(plan.describe(), indent=2) + "\n")
        except WriteError as exc:
            raise pytest.UsageError(f"--mi300x-plan-json: {exc}") from None
    return plan
