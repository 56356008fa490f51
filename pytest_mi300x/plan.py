"""The plan of a selection: every server it would start, and nothing started.

``pytest-mi300x plan [pytest args]`` (``pytest --mi300x-plan``) collects the tests, asks
the session what each one's server would be, and prints per server: engine, build, model,
flag set, the GPUs it would lease and the visibility env that lease gives, the full
command line and env (secrets redacted), how it is stopped, and the tests it serves.
Builds and models come from their specs alone (``PerfSession`` in plan mode): no server,
pip install, docker pull / inspect / run, GPU tool or engine runs.

A server's GPUs are the ones a lease takes on an idle host (the lowest free ids); ports
are placeholders, since each server gets a free loopback port when it starts.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_mi300x.engines.base import EngineUnsupported
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.gpus.leases import visibility_env
from pytest_mi300x.hosts.profile import HostConfigError
from pytest_mi300x.results import redact
from pytest_mi300x.servers.pool import leased, owner
from pytest_mi300x.servers.process import redact_env

if TYPE_CHECKING:
    from pytest_mi300x.session import PerfSession

PLACEHOLDER_PORT = 8001
"""The first placeholder port; the n-th server of a plan shows 8001 + n - 1."""


@dataclass(frozen=True)
class ServerRequest:
    """What one test asks of the session: a server of this engine, model and flag set."""

    test: str
    engine: str
    model: str
    flag_set: FlagSet
    accelerators: tuple[str, ...] = ()
    instances: int = 1
    """Servers of the flag set behind the test's workload (``server_instances``)."""


@dataclass
class PlannedServer:
    """One server of the plan."""

    key: str
    engine: str
    build: str
    version: str
    model: str
    model_path: str
    flag_set: dict[str, Any]
    gpus: list[int]
    visibility: dict[str, str]
    argv: list[str]
    env: dict[str, str]
    stop: list[str] | None
    note: str = ""
    """How the build was chosen when it was not given for this host."""
    tests: list[str] = field(default_factory=list)
    flag_sets: list[str] = field(default_factory=list)
    """Every flag set the server serves: those that launch the same server share it."""

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "engine": self.engine, "build": self.build,
                "note": self.note, "version": self.version, "model": self.model,
                "model_path": self.model_path,
                "flag_set": self.flag_set, "flag_sets": self.flag_sets, "gpus": self.gpus,
                "visibility": self.visibility, "argv": self.argv, "env": self.env,
                "stop": self.stop, "tests": self.tests}


@dataclass
class Plan:
    """Every server a selection would start, and the tests that would not get one."""

    host: dict[str, Any]
    servers: list[PlannedServer] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(test, why it would skip on this host)."""
    unplanned: list[tuple[str, str]] = field(default_factory=list)
    """(test, why its server cannot be planned: a bad build, an unknown model)."""
    claims: list[str] = field(default_factory=list)
    """Claim tests: they judge other tests' results, measured on those tests' servers."""

    def describe(self) -> dict[str, Any]:
        """The plan as JSON: each part's secrets were hidden where it was made (not by field
        name here, which would hide every server's "key")."""
        return {"host": self.host, "servers": [s.describe() for s in self.servers],
                "skipped": [{"test": t, "reason": r} for t, r in self.skipped],
                "unplanned": [{"test": t, "reason": r} for t, r in self.unplanned],
                "claims": list(self.claims),
                "started": "nothing"}

    def lines(self) -> list[str]:
        """The plan as a person reads it, secrets hidden."""
        return [redact.text(line) for line in self._lines()]

    def _lines(self) -> list[str]:
        host = self.host
        gpus = (f"{host['accelerator_count']} x {host['accelerator']}"
                if host["accelerator"] != "cpu" else "CPU")
        tests = sum(len(s.tests) for s in self.servers)
        out = [f"pytest-mi300x plan: host {host['name']} ({gpus}, {host['source']}): "
               f"{len(self.servers)} server(s) for {tests} test(s), {len(self.skipped)} "
               f"test(s) skip, {len(self.unplanned)} cannot be planned; nothing was started",
               "ports are placeholders (each server gets a free loopback port when it "
               "starts); GPUs are those a lease takes on an idle host"]
        for n, server in enumerate(self.servers, 1):
            flags = " ".join([*server.flag_set["argv"],
                              *(f"{k}={v}" for k, v in server.flag_set["env"].items())])
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(server.env.items()))
            out += ["", f"server {n} of {len(self.servers)}: {server.key}",
                    f"  engine:   {server.engine}, build {server.build}; {server.version}",
                    *([f"            {server.note}"] if server.note else []),
                    f"  model:    {server.model} -> {server.model_path}",
                    f"  flag set: {', '.join(server.flag_sets) or server.flag_set['name']} "
                    f"({flags or 'engine defaults'})"]
            if server.gpus:
                visible = " ".join(f"{k}={v}" for k, v in server.visibility.items())
                out.append(f"  GPUs:     {len(server.gpus)} leased; {visible}")
            else:
                out.append("  GPUs:     none (no GPU lease on this host)")
            out += [f"  command:  {shlex.join(server.argv)}", f"  env:      {env}"]
            if server.stop:
                out.append(f"  stopped:  process group, then {shlex.join(server.stop)}")
            out.append(f"  tests ({len(server.tests)}):")
            out += [f"    {t}" for t in server.tests]
        for title, rows in (("skip on this host", self.skipped),
                            ("cannot be planned", self.unplanned)):
            if rows:
                out += ["", f"{title} ({len(rows)}):"]
                out += [f"  {test}: {reason}" for test, reason in rows]
        if self.claims:
            out += ["", f"claims ({len(self.claims)}), judged on the results of the tests "
                        "they compare (measured on those tests' servers above when not "
                        "selected):"]
            out += [f"  {test}" for test in self.claims]
        return out


def make_plan(session: PerfSession, requests: list[ServerRequest],
              claims: list[str] | None = None) -> Plan:
    """The plan of ``requests`` on ``session``'s host (a session in plan mode)."""
    if not session.settings.plan:
        raise ValueError("make_plan needs a session in plan mode (Settings.plan): another "
                         "would install, pull or inspect builds")
    plan = Plan(host=redact.redact(session.host.describe()), claims=list(claims or ()))
    by_key: dict[str, PlannedServer] = {}
    for request in requests:
        try:
            reason = session.unavailable(request.engine, request.flag_set, request.accelerators,
                                         instances=request.instances)
            if reason:
                plan.skipped.append((request.test, reason))
                continue
            key = session.server_key(request.engine, request.model, request.flag_set)
            # Named as PerfSession.servers names a group's instances.
            keys = [key] if request.instances == 1 else [
                f"{key}-instance-{i + 1}-of-{request.instances}"
                for i in range(request.instances)]
            for instance, one in enumerate(keys):
                if one not in by_key:
                    by_key[one] = _server(session, one, request, len(by_key), instance)
                    plan.servers.append(by_key[one])
        except (HostConfigError, EngineUnsupported, ValueError) as exc:
            plan.unplanned.append((request.test, str(exc)))
            continue
        for one in keys:
            by_key[one].tests.append(request.test)
            if request.flag_set.name not in by_key[one].flag_sets:
                by_key[one].flag_sets.append(request.flag_set.name)
    return plan


def _server(session: PerfSession, key: str, request: ServerRequest, index: int,
            instance: int = 0) -> PlannedServer:
    """What the pool would start for ``key`` (ServerPool._start without the start); the
    ``instance``-th server of a group leases the GPUs after its siblings'."""
    engine = session.engine(request.engine)
    spec = session.launch_spec(request.engine, request.model, request.flag_set,
                               port=PLACEHOLDER_PORT + index)
    spec = replace(spec, server_id=session.pool.server_id(key, 1), owner=owner())
    visibility: dict[str, str] = {}
    if spec.gpus_needed:
        first = instance * spec.gpus_needed
        gpus = tuple(range(first, first + spec.gpus_needed))
        visibility = visibility_env(gpus, session.host.accelerator)
        spec = leased(spec, gpus, visibility)
    description = session.engine_description(request.engine)
    return PlannedServer(
        key=key, engine=engine.name, build=str(description.get("build")),
        version=session.engine_version(request.engine), model=request.model,
        model_path=spec.model, flag_set=redact.redact(spec.flag_set.describe()),
        gpus=list(spec.gpus), visibility=visibility, argv=redact.argv(engine.command(spec)),
        env=redact_env(engine.environment(spec)), stop=engine.cleanup_argv(spec),
        note=str(description.get("note", "")))
