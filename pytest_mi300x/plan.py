"""The plan of a selection: every server it would start, and nothing started.

``pytest-mi300x plan [pytest args]`` (``pytest --mi300x-plan``) collects the tests, asks
the session what each one's server would be, and prints per server: engine, build, model,
flag set, the GPUs it would lease and the visibility env that lease gives, the full
command line and env (secrets redacted), how it is stopped, and the tests it serves.
Builds and models come from their specs alone (``PerfSession`` in plan mode): no server,
pip install, docker pull / inspect / run, GPU tool or engine runs.

A server's GPUs are the ones a lease takes on an idle host (the lowest free ids); ports
are placeholders, since each server gets a free loopback port when it starts.

Each test's body is dry-run for the workloads it would measure (plugin/dryrun.py), and each
workload is checked against the roofline of its server's GPUs (load/feasibility.py):
feasible, saturating (a paced rate past the roofline: the server sets the pace), rescaled (a
sweep's ladder fitted under it), infeasible (it cannot run: refused at run time) or
unchecked (no roofline, lengths unknown). Servers that two flag sets would start
identically on this host (the same command and env but for port, name and GPU placement)
are flagged as duplicates: each would start on its own, measuring the same thing twice.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_mi300x.engines.base import EngineUnsupported
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.gpus.leases import visibility_env
from pytest_mi300x.hosts.profile import HostConfigError
from pytest_mi300x.load.feasibility import check, peak_rate, request_lengths, roofline_of
from pytest_mi300x.results import redact
from pytest_mi300x.servers.pool import leased, owner
from pytest_mi300x.servers.process import redact_env

if TYPE_CHECKING:
    from pytest_mi300x.session import PerfSession
    from pytest_mi300x.workload.workload import Workload

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
    workloads: tuple[tuple[Workload, tuple[float, ...]], ...] = ()
    """What its body would measure (workload, sweep ladder), from the plan's dry run."""
    dry_run_note: str = ""


@dataclass(frozen=True)
class WorkloadCheck:
    """One workload of one test against its server's roofline."""

    test: str
    server: int
    """The server's number in the plan (1-based)."""
    status: str
    reason: str

    def describe(self) -> dict[str, Any]:
        return {"test": self.test, "server": self.server, "status": self.status,
                "reason": self.reason}


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
    tensor_parallel: int
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
                "tensor_parallel": self.tensor_parallel,
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
    workloads: list[WorkloadCheck] = field(default_factory=list)

    def duplicates(self) -> list[list[int]]:
        """Numbers (1-based) of servers that launch the same server on this host, apart from
        port, name and GPU placement; instances of one group count as one (they start
        together by design)."""
        seen: dict[str, list[int]] = {}
        for n, server in enumerate(self.servers, 1):
            group = server.key.rpartition("-instance-")
            if group[1] and not group[2].startswith("1-of-"):
                continue  # a group is represented by its first instance
            # A group compares with groups of as many instances, never with one server.
            seen.setdefault(_launch_signature(server) + (group[2] if group[1] else ""),
                            []).append(n)
        return [numbers for numbers in seen.values() if len(numbers) > 1]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for w in self.workloads:
            found[w.status] = found.get(w.status, 0) + 1
        return found

    def describe(self) -> dict[str, Any]:
        """The plan as JSON: each part's secrets were hidden where it was made (not by field
        name here, which would hide every server's "key")."""
        return {"host": self.host, "servers": [s.describe() for s in self.servers],
                "skipped": [{"test": t, "reason": r} for t, r in self.skipped],
                "unplanned": [{"test": t, "reason": r} for t, r in self.unplanned],
                "claims": list(self.claims),
                "workloads": [w.describe() for w in self.workloads],
                "duplicates": self.duplicates(),
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
               "starts); GPUs are those a lease takes on an idle host",
               _summary(self.counts(), len(self.duplicates()))]
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
                out.append(f"  GPUs:     {len(server.gpus)} leased, tensor parallel "
                           f"{server.tensor_parallel}; {visible}")
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
        out += self._checked_lines()
        if self.claims:
            out += ["", f"claims ({len(self.claims)}), judged on the results of the tests "
                        "they compare (measured on those tests' servers above when not "
                        "selected):"]
            out += [f"  {test}" for test in self.claims]
        return out


    def _checked_lines(self) -> list[str]:
        out: list[str] = []
        if self.workloads:
            out += ["", "workloads against the roofline of their server's GPUs "
                        f"({_summary(self.counts(), None)}):"]
            out += [f"  {w.status}: {w.test} (server {w.server}): {w.reason}"
                    for w in self.workloads]
        for numbers in self.duplicates():
            names = ", ".join(f"{n} ({', '.join(self.servers[n - 1].flag_sets)})"
                              for n in numbers)
            out += ["", f"duplicate servers: {names} would start the same server on this "
                        "host (same command and env but for port, name and GPUs): each "
                        "measures what the other does"]
        return out


def _summary(counts: dict[str, int], duplicates: int | None) -> str:
    order = ("feasible", "saturating", "rescaled", "infeasible", "unchecked")
    text = ", ".join(f"{counts.get(k, 0)} {k}" for k in order)
    return f"workloads: {text}" + ("" if duplicates is None
                                   else f"; duplicate servers: {duplicates}")


def _launch_signature(server: PlannedServer) -> str:
    visibility = set(server.visibility)
    env = sorted((k, v) for k, v in server.env.items() if k not in visibility)
    return repr((server.engine, server.build, server.model_path, server.flag_set["argv"],
                 env, len(server.gpus)))


def _checks(session: PerfSession, request: ServerRequest, planned: PlannedServer,
            number: int) -> list[WorkloadCheck]:
    """The request's workloads, scaled to the host, against its server's roofline."""
    if not request.workloads:
        return [WorkloadCheck(request.test, number, "unchecked",
                              request.dry_run_note or "its body handed over no workload")]
    host = session.host
    gpus = len(planned.gpus) * request.instances
    roofline, why = roofline_of(host, planned.model_path, planned.model, gpus,
                                request.flag_set.value("kv_cache_dtype"))
    max_seqs = request.flag_set.value("max_num_seqs")
    out = []
    for workload, ladder in request.workloads:
        scaled = workload.scaled(host.scale)
        rates = [host.scale.request_rate(r, burst_above_max=False) for r in ladder]
        found = check(roofline, why, request_lengths(scaled.dataset),
                      peak_rate(scaled.arrivals), rates,
                      max_seqs if isinstance(max_seqs, int) else None)
        out.append(WorkloadCheck(request.test, number, found.status, found.reason))
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
        plan.workloads += _checks(session, request, by_key[keys[0]],
                                  plan.servers.index(by_key[keys[0]]) + 1)
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
        gpus=list(spec.gpus), tensor_parallel=spec.gpus_needed, visibility=visibility,
        argv=redact.argv(engine.command(spec)),
        env=redact_env(engine.environment(spec)), stop=engine.cleanup_argv(spec),
        note=str(description.get("note", "")))
