"""The session's servers: one per (engine, model, flag set), reused by every test that shares it."""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_mi300x.engines.base import Engine, LaunchSpec
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.gpus.leases import GpuLease, LeaseError
from pytest_mi300x.net import free_port, status_of
from pytest_mi300x.progress import Progress, silent
from pytest_mi300x.results.files import redact_file, slug
from pytest_mi300x.results.model import FailureKind
from pytest_mi300x.servers.process import (
    ServerError,
    ServerExited,
    ServerProcess,
    error_line,
    redact_env,
)
from pytest_mi300x.servers.records import ServerRecord, ServerRecords, run_cleanup, start_time


@dataclass
class RunningServer:
    """A ready server and what it was started with."""

    key: str
    engine: Engine
    spec: LaunchSpec
    process: ServerProcess
    version: str
    generation: int
    added_env: dict[str, str] = field(default_factory=dict)
    lease: GpuLease | None = None
    healthy: bool = True
    """False once a run saw it stall: the pool starts a fresh one for the next test."""
    asked: FlagSet | None = None
    """The flag set the test it serves now asked for (the server may have been started for
    another that launches the same server: servers/shared.py); what its results record."""
    resolved: dict[str, str] = field(default_factory=dict)
    """The settings ``asked`` gives that the server was started without, as it reports them."""
    measured_seeds: dict[str, dict[int, str]] = field(default_factory=dict)
    """Per dataset (without its seed), the seeds measured on this server and by which test:
    another test of the same dataset measures others, not prompts in its prefix cache."""

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    @property
    def api_key(self) -> str:
        return self.spec.api_key

    def check_alive(self, during: str, grace_s: float = 0.0) -> None:
        """Raise with the log tail if the server has died. With ``grace_s`` (its streams
        were just cut), a server still running is given that long to be seen gone: a
        killed engine closes its sockets before its exit can be collected, and on a slow
        machine the client sees the cut well before."""
        if grace_s > 0:
            self.process.wait_exit(grace_s)
        if not self.process.alive():
            tail = self.process.log_tail()
            raise ServerExited(
                f"{self.engine.name} server died {during} (exit code "
                f"{self.process.exit_code()}, log: {self.process.log_path})", tail)

    def describe(self) -> dict[str, Any]:
        """Provenance: what was launched, resolved, with secrets redacted."""
        argv = list(self.process.argv)
        return {
            "engine": self.engine.name,
            "version": self.version,
            "argv": argv,
            "env": redact_env(self.added_env),
            "flag_set": (self.asked or self.spec.flag_set).describe(),
            **({"launched_flags": self.spec.flag_set.to_argv(), "resolved": self.resolved}
               if self.resolved else {}),
            "extra_args": list(self.spec.extra_args),
            "startup_s": self.process.startup_s,
            "scheduling": dict(self.process.scheduling),
            "log": str(self.process.log_path),
            "generation": self.generation,
            "gpus": list(self.spec.gpus),
        }


class PortTaken(ServerError):
    """Another program took the server's port before it bound: the machine, not the engine."""

    failure_kind = FailureKind.INFRA


PORT_TAKEN = re.compile(r"address already in use", re.IGNORECASE)
PORT_TRIES = 3


def check_ours(engine: Engine, spec: LaunchSpec, process: ServerProcess) -> None:
    """The server that answers is the one we started, and serves the model we ask for.

    A server of someone else's on the port answers /health too: our own process must be
    alive, and the API must refuse a wrong key and take ours (engines get the session's
    key), and list the served model name. A server that refuses both keys is another
    program's (a vLLM with a key of its own): the port is taken, not the harness broken.
    """
    import openai  # the control plane only; a second of import time, paid when a server starts

    if not process.alive():
        tail = process.log_tail()
        kind = PortTaken if PORT_TAKEN.search(tail) else ServerExited
        raise kind(f"server process exited (code {process.exit_code()}) while something "
                   f"else answered on {spec.base_url}: {error_line(tail) or 'see its log'} "
                   f"(log: {process.log_path})", tail)
    method, path = engine.auth_probe
    wrong = status_of(method, f"{spec.base_url}{path}", "not-" + spec.api_key)
    if wrong not in (401, 403):
        raise PortTaken(
            f"the server on {spec.base_url} answered {method} {path} with HTTP {wrong} to a "
            "wrong API key: it is not the one this session started (another program holds "
            f"the port); log: {process.log_path}", process.log_tail())
    ours = status_of(method, f"{spec.base_url}{path}", spec.api_key)
    if ours in (401, 403):
        raise PortTaken(
            f"the server on {spec.base_url} refused this session's API key (HTTP {ours} to "
            f"{method} {path}): another program holds the port; log: {process.log_path}",
            process.log_tail())
    client = openai.OpenAI(base_url=f"{spec.base_url}/v1", api_key=spec.api_key,
                           max_retries=2, timeout=30.0)
    with client:
        served = [m.id for m in client.models.list()]
    if spec.served_model_name not in served:
        raise ServerError(
            f"server at {spec.base_url} serves {served}, not {spec.served_model_name!r} "
            f"(log: {process.log_path}); check --served-model-name in the engine arguments",
            process.log_tail())


def leased(spec: LaunchSpec, gpus: tuple[int, ...], env: Mapping[str, str]) -> LaunchSpec:
    """The spec of a server on leased GPUs: their visibility env over the host's."""
    return replace(spec, env={**spec.env, **env}, gpus=gpus)


def owner() -> str:
    """``PID:STARTTIME`` of this process: who started a server, for the reapers."""
    return f"{os.getpid()}:{start_time(os.getpid())}"


class ServerPool:
    """Starts servers on demand, keeps at most ``max_servers`` alive, restarts dead ones.

    A key whose start failed fails again at once for the rest of the session,
    instead of paying the engine's start-up time for every test that shares it.
    """

    def __init__(self, log_dir: Path, *, max_servers: int = 1, start_timeout: float = 900.0,
                 bind_host: str = "127.0.0.1",
                 lease: Callable[[int, str], GpuLease] | None = None,
                 others_waiting: Callable[[], bool] | None = None,
                 engine_nice: int = 0, frontend_cpus: tuple[int, ...] = (),
                 progress: Progress = silent,
                 records: ServerRecords | None = None) -> None:
        self.log_dir = log_dir
        self.progress = progress
        self.records = records
        """Where each live server is recorded, so a killed session's servers are reaped."""
        self.engine_nice = engine_nice
        self.frontend_cpus = frontend_cpus
        self.max_servers = max_servers
        self.start_timeout = start_timeout
        self.bind_host = bind_host
        self.tag = secrets.token_hex(3)
        """Tells this pool's servers from every other session's in names (containers)."""
        self._live: OrderedDict[str, RunningServer] = OrderedDict()
        self._recorded: dict[int, ServerRecord] = {}
        self._lease_timeouts: dict[int, LeaseError] = {}
        self._failed: dict[str, ServerError] = {}
        self._starts: dict[str, int] = {}
        self._lease = lease
        self._others_waiting = others_waiting
        self._mu = threading.Lock()
        self._busy = False
        self._reaper: threading.Thread | None = None

    def acquire(self, key: str, engine: Engine,
                make_spec: Callable[[str, int], LaunchSpec]) -> RunningServer:
        """The live server for ``key``, starting (or restarting) it if needed.

        The server counts as in use until ``idle()``.
        """
        with self._mu:
            self._busy = True
            return self._acquire(key, engine, make_spec)

    def acquire_group(self, keys: list[str], engine: Engine,
                      make_spec: Callable[[str, int], LaunchSpec]) -> list[RunningServer]:
        """Live servers for every key at once (instances of one flag set behind one
        workload): none of them is stopped to make room for another, so a group may
        exceed ``max_servers``; on GPU hosts each instance leases its own GPUs."""
        with self._mu:
            self._busy = True
            group = frozenset(keys)
            return [self._acquire(key, engine, make_spec, keep=group) for key in keys]

    def idle(self) -> None:
        """The test using the server ended. On GPU hosts a watcher then stops the
        idle server as soon as another worker waits for GPUs: an xdist worker
        blocks between tests until it gets more, and must not hold GPUs meanwhile."""
        with self._mu:
            self._busy = False
            if (self._others_waiting is not None and self._live
                    and (self._reaper is None or not self._reaper.is_alive())):
                self._reaper = threading.Thread(target=self._reap, name="mi300x-idle-servers",
                                                daemon=True)
                self._reaper.start()

    def _reap(self, poll_s: float = 0.5) -> None:
        assert self._others_waiting is not None
        while True:
            time.sleep(poll_s)
            with self._mu:
                if self._busy or not self._live:
                    return
                if self._others_waiting():
                    self.close()
                    return

    def _acquire(self, key: str, engine: Engine,
                 make_spec: Callable[[str, int], LaunchSpec],
                 keep: frozenset[str] = frozenset()) -> RunningServer:
        if key in self._failed:
            failed = self._failed[key]
            raise type(failed)(f"(same start failure as before) {failed.args[0]}", failed.log_tail)
        server = self._live.get(key)
        if server is not None and server.process.alive() and server.healthy:
            self._live.move_to_end(key)
            return server
        if server is not None:
            # Died or stalled since its last test: clear what is left of it, start afresh.
            self._stop(key)
        while len(self._live) >= self.max_servers:
            spare = next((k for k in self._live if k not in keep), None)
            if spare is None:
                break  # the rest of this server's group: the group may exceed max_servers
            self._stop(spare)
        return self._start(key, engine, make_spec, keep)

    def _start(self, key: str, engine: Engine,
               make_spec: Callable[[str, int], LaunchSpec],
               keep: frozenset[str] = frozenset()) -> RunningServer:
        """Start a server; a port another program took meanwhile is tried again with a
        new port (and never cached as this key's start failure)."""
        for attempt in range(1, PORT_TRIES + 1):
            try:
                return self._start_once(key, engine, make_spec, keep)
            except PortTaken:
                if attempt == PORT_TRIES:
                    raise
                self.progress(f"{key}: its port was taken by another program; "
                              "starting again on a new port")
        raise AssertionError("unreachable")

    def _start_once(self, key: str, engine: Engine,
                    make_spec: Callable[[str, int], LaunchSpec],
                    keep: frozenset[str] = frozenset()) -> RunningServer:
        generation = self._starts.get(key, 0) + 1
        self._starts[key] = generation
        spec = replace(make_spec(self.bind_host, free_port(self.bind_host)),
                       server_id=self.server_id(key, generation), owner=owner(),
                       nice=self.engine_nice)
        # A containerised engine yields inside its container; renicing the docker client
        # would lower only the client (and record a niceness the engine never had).
        nice_inside = bool(getattr(engine, "applies_nice", False))
        lease = None
        if spec.gpus_needed and self._lease is not None:
            timed_out = [e for n, e in self._lease_timeouts.items() if n <= spec.gpus_needed]
            if timed_out:
                # Waiting the whole lease timeout again for every test would cost hours.
                raise LeaseError(f"(as for an earlier test) {timed_out[0]}")
            # One server (or server group) per process on GPU hosts: a worker never
            # waits for GPUs while its idle servers hold others (that is how workers
            # deadlock).
            for other in [k for k in self._live if k not in keep]:
                self._stop(other)
            lease = self._lease(spec.gpus_needed, key)
            try:
                lease.acquire()
            except LeaseError as exc:
                if exc.lasting:  # a GPU still hot after its cool-down is tried again
                    self._lease_timeouts[spec.gpus_needed] = exc
                raise
            spec = leased(spec, lease.gpus, lease.env)
        added_env = engine.environment(spec)
        log_path = self.log_dir / f"{slug(key)}-{generation}.log"
        inherited = {k: v for k, v in os.environ.items() if k not in spec.flag_set.unset}
        process = ServerProcess(
            engine.command(spec),
            env={**inherited, **added_env},
            log_path=log_path,
            ready_url=f"{spec.base_url}{engine.health_path}",
            start_timeout=self.start_timeout,
            on_spawn=self._on_spawn(key, engine, spec, lease, log_path),
            nice=0 if nice_inside else self.engine_nice,
            cpus=self.frontend_cpus,
            on_wait=self._waiting(key),
        )
        self.progress(f"starting {engine.name} server {key} on {spec.base_url} "
                      f"(log: {process.log_path})")
        try:
            try:
                process.start()
            except ServerExited as exc:
                if PORT_TAKEN.search(exc.log_tail):
                    raise PortTaken(str(exc), exc.log_tail) from None
                raise
            check_ours(engine, spec, process)
            version = engine.version(spec.base_url, spec.api_key)
        except BaseException as exc:
            self._cleanup(engine, spec, process)
            if lease is not None:
                lease.release()
            if isinstance(exc, ServerError) and not isinstance(exc, PortTaken):
                self._failed[key] = exc
            raise
        finally:
            live_done = getattr(self.progress, "done", None)
            if live_done is not None:
                live_done()
        if nice_inside and spec.nice:
            process.scheduling["nice_in_container"] = spec.nice
        self.progress(f"{engine.name} {version} ready in {process.startup_s or 0:.0f} s")
        server = RunningServer(key, engine, spec, process, version, generation, added_env, lease)
        self._live[key] = server
        return server

    def server_id(self, key: str, generation: int) -> str:
        """The start's id: this pool's tag, the server key, the start's number; readable in
        ``docker ps`` and unique on the host."""
        return f"{self.tag}-{slug(key, 80)}-{generation}"

    def _waiting(self, key: str) -> Callable[[float, str], None] | None:
        """The live line while a server starts: elapsed time and its log's last line."""
        live = getattr(self.progress, "live", None)
        if live is None:
            return None
        return lambda elapsed, last_line: live(
            f"server starting: {elapsed:.0f} s: {last_line}"[:110])

    def _on_spawn(self, key: str, engine: Engine, spec: LaunchSpec,
                  lease: GpuLease | None, log_path: Path) -> Callable[[int], None]:
        def spawned(pid: int) -> None:
            if self.records is not None:
                self._recorded[pid] = self.records.add(pid, key, engine.cleanup_argv(spec),
                                                       log=log_path)
            if lease is not None:
                lease.attach(pid, engine.cleanup_argv(spec))
        return spawned

    def _cleanup(self, engine: Engine, spec: LaunchSpec, process: ServerProcess) -> None:
        """Stop the process group, remove what outlives it, forget its record, and hide any
        secret the engine wrote into its log."""
        process.stop()
        redact_file(process.log_path)
        cleanup = engine.cleanup_argv(spec)
        problem = run_cleanup(cleanup) if cleanup else None
        if cleanup and problem:
            self.progress(f"could not run {' '.join(cleanup)}: {problem}")
        record = self._recorded.pop(process.pid or -1, None)
        if record is not None and self.records is not None:
            self.records.remove(record)

    def _stop(self, key: str) -> None:
        server = self._live.pop(key, None)
        if server is not None:
            self._cleanup(server.engine, server.spec, server.process)
            if server.lease is not None:
                server.lease.release()

    def close(self) -> None:
        """Stop every server; safe to call more than once."""
        for key in list(self._live):
            self._stop(key)

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
