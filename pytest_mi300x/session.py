"""The per-process session: settings, host, engine builds, models and the server pool.

A context manager that works without pytest: ``with PerfSession(settings, host, dir) as s:
server = s.server("vllm", "llama-3.1-70b", DEFAULT_FLAGS)``; leaving it stops every server
and frees every GPU lease it took.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_mi300x.config import Settings
from pytest_mi300x.engines.base import BuiltEngine, Engine, EngineKind, LaunchSpec
from pytest_mi300x.engines.builds import plan_build, resolve_gpu_build
from pytest_mi300x.engines.cache import default_cache_dir
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.engines.registry import UnknownEngine, kind
from pytest_mi300x.engines.served import TP_FLAG, ServedModel, gpus_needed, secret_flags_to_env
from pytest_mi300x.engines.tiny_model import ensure_tiny_model, generator_hash, read_local_vocab
from pytest_mi300x.gpus import discovery as gpus
from pytest_mi300x.gpus.leases import GpuLease, lock_dir_from_env, others_waiting, sweep_orphans
from pytest_mi300x.hosts.placement import Placement
from pytest_mi300x.hosts.profile import TINY_MODEL, HostConfigError, HostProfile
from pytest_mi300x.judge.gate import session_gate
from pytest_mi300x.progress import Progress, to_stderr
from pytest_mi300x.results import redact
from pytest_mi300x.servers import shared
from pytest_mi300x.servers.pool import RunningServer, ServerPool
from pytest_mi300x.servers.records import ServerRecords, alive
from pytest_mi300x.telemetry.gpu import GpuTelemetry

if TYPE_CHECKING:
    from pytest_mi300x.load.measurer import Measured, Measurer
    from pytest_mi300x.servers.endpoint import Endpoint


class GpusUnreachable(HostConfigError):
    """The host profile has GPUs but no GPU tool answers on this machine."""


class PerfSession:
    """Lives in ``config.stash`` for one pytest process (controller or worker)."""

    def __init__(self, settings: Settings, host: HostProfile, results_dir: Path,
                 progress: Progress = to_stderr) -> None:
        self.settings = settings
        self.progress = progress
        self.host = host
        self.results_dir = results_dir
        # One key per session: engines accept only it, and it never leaves this process tree.
        self.api_key = secrets.token_urlsafe(24)
        # Every secret the session can meet, so that nothing it writes can carry one.
        redact.register(self.api_key)
        redact.register_process_env()
        redact.register_env({**host.env, **dict(settings.engine_env)})
        redact.register_argv((*host.engine_args, *settings.engine_args))
        # A CPU host's engine computes on its own CPUs; servers' front ends and the load
        # client (pinned for each run) share the rest.
        self.placement = None if host.has_gpus or settings.endpoint \
            else Placement.for_this_machine(host.frontend_cpus)
        self.pool = ServerPool(results_dir / "servers", max_servers=host.max_servers,
                               start_timeout=host.start_timeout_s,
                               lease=self.lease if host.has_gpus else None,
                               others_waiting=((lambda: others_waiting(self.lock_dir))
                                               if host.has_gpus else None),
                               engine_nice=host.engine_nice,
                               frontend_cpus=(self.placement.frontend_cpus
                                              if self.placement else ()),
                               progress=progress,
                               records=ServerRecords(self.records_folder))
        self._endpoint: Endpoint | None = None
        self.gate, self.steadiness = session_gate(settings, host)
        """The gate, and what today's steadiness check said (empty: none given)."""
        self._builds: dict[str, BuiltEngine] = {}
        self._models: dict[str, ServedModel] = {}
        self.measured: dict[str, Measured] = {}
        """This process's valid results by test id (claims compare them)."""

    def share_budget(self, tests: int) -> None:
        """The session's false-alarm budget split over the ``tests`` gated tests it runs."""
        self.gate = self.gate.sharing(tests, self.settings.gate_alpha)

    @property
    def records_folder(self) -> Path:
        """Where this user's live servers are recorded (see servers/records.py)."""
        return (self.settings.cache_dir or default_cache_dir()) / "servers"

    def reap(self) -> list[str]:
        """Stop what killed sessions left running on this machine (servers, containers)."""
        done = ServerRecords(self.records_folder).reap(self.progress)
        if self.host.launcher == "docker":
            # Containers of ended sessions whose record is gone, found by their labels.
            from pytest_mi300x.engines.docker import DockerError, reap_orphans

            try:
                removed = reap_orphans(alive)
            except DockerError as exc:
                self.progress(f"docker: could not list containers to reap ({exc})")
                removed = []
            for line in removed:
                self.progress(line)
            done += removed
        return done

    def __enter__(self) -> PerfSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the host's GPUs ---------------------------------------------------

    def inventory(self) -> gpus.Inventory:
        """The host's GPUs as its tools report them now."""
        try:
            return gpus.discover(self.host.accelerator)
        except gpus.GpuUnreachable as exc:
            raise GpusUnreachable(
                f"host {self.host.name!r} ({self.host.accelerator_count} x "
                f"{self.host.accelerator}, {self.host.source}): its GPUs are not reachable from "
                f"this machine ({exc}); run on that host, or use --gpu-host cpu here") from None

    @property
    def lock_dir(self) -> Path:
        return Path(self.host.lock_dir) if self.host.lock_dir else lock_dir_from_env()

    def lease(self, count: int, label: str) -> GpuLease:
        """An unentered lease of ``count`` GPUs on this host (the pool enters it)."""
        return GpuLease(count, accelerator=self.host.accelerator, inventory=self.inventory,
                        lock_dir=self.lock_dir, label=label, timeout_s=self.host.lease_timeout_s,
                        progress=self.progress, cooldown_s=self.host.checks.cooldown_s)

    def telemetry(self, gpu_indices: tuple[int, ...]) -> Callable[[], GpuTelemetry] | None:
        """A sampler factory for the measured runs on these GPUs (None on the cpu host)."""
        if not self.host.has_gpus or not gpu_indices:
            return None
        return lambda: GpuTelemetry.for_gpus(self.host.accelerator, gpu_indices)

    # -- engines -----------------------------------------------------------

    def engine_kind(self, name: str) -> EngineKind:
        try:
            return kind(name)
        except UnknownEngine as exc:
            raise HostConfigError(str(exc)) from None

    # -- an existing endpoint (--endpoint) -----------------------------------

    def endpoint(self) -> Endpoint:
        """The server ``--endpoint`` names, probed once (raises EndpointError)."""
        from pytest_mi300x.servers.endpoint import connect

        if self._endpoint is None:
            assert self.settings.endpoint is not None
            key = os.environ.get(self.settings.endpoint_key_env, "")
            self._endpoint = connect(self.settings.endpoint, key, self.settings.endpoint_model)
        return self._endpoint

    def build(self, name: str) -> BuiltEngine:
        """The engine ``name`` as this session runs it: provisioned on the cpu host, resolved
        from its build option on a GPU host; once per session."""
        if self.settings.endpoint and name not in self._builds:
            ep = self.endpoint()
            self._builds[name] = BuiltEngine(ep.engine, ep.version, {
                "build": f"endpoint {ep.url}", "version": ep.version, "endpoint": ep.url,
                "version_info": ep.version_info})
        if name not in self._builds:
            engine_kind = self.engine_kind(name)
            raw = self.settings.build_for(engine_kind)
            if self.settings.plan:
                self._builds[name] = plan_build(name, raw, self.host, self.settings.cache_dir)
            elif self.host.has_gpus or self._installed_path(engine_kind):
                # An engine with no CPU build given as an installed launcher (a TGI on
                # this machine, or a stand-in for it) runs as on a GPU host's local launcher.
                self._builds[name] = resolve_gpu_build(name, raw, self.host)
            else:
                self._builds[name] = engine_kind.provision(
                    raw or "", self.settings.cache_dir, self.progress,
                    self.settings.engine_cache_limit)
        return self._builds[name]

    def use_build(self, name: str, build: BuiltEngine) -> None:
        """Serve ``name`` with an already resolved build (tests, custom launchers)."""
        self._builds[name] = build

    def engine(self, name: str) -> Engine:
        return self.build(name).engine

    def engine_version(self, name: str) -> str:
        return self.build(name).version

    def engine_description(self, name: str) -> dict[str, Any]:
        return self.build(name).provenance

    def unavailable(self, engine_name: str, flag_set: FlagSet,
                    accelerators: tuple[str, ...] = (),
                    logical_model: str | None = None, instances: int = 1) -> str | None:
        """Why this host cannot run the case at all (a skip, not a failure), else None."""
        host = self.host
        if self.settings.endpoint:
            reason = self.endpoint().refuses(engine_name, flag_set)
            if reason:
                return reason
        if accelerators and host.accelerator not in accelerators:
            return (f"runs on the GPU host: needs {' or '.join(accelerators)}; "
                    f"host {host.name!r} is {host.accelerator}")
        tp = flag_set.value(TP_FLAG)
        if isinstance(tp, int) and tp * instances > max(1, host.accelerator_count):
            many = f"{instances} instances of " if instances > 1 else ""
            return (f"runs on the GPU host: {many}tensor parallel {tp} "
                    f"{'need' if instances > 1 else 'needs'} "
                    f"{tp * instances} GPUs; host {host.name!r} has {host.accelerator_count}")
        if self.settings.endpoint and instances > 1:
            return (f"needs {instances} servers of its own; --endpoint measures "
                    f"{self.settings.endpoint} as it runs")
        if host.has_gpus and instances * gpus_needed(flag_set, host) > host.accelerator_count:
            return (f"{instances} instances of {gpus_needed(flag_set, host)} GPUs each do not "
                    f"fit host {host.name!r} ({host.accelerator_count} GPUs)")
        engine_kind = self.engine_kind(engine_name)
        if host.has_gpus and not self.settings.endpoint and not self.settings.plan \
                and engine_name not in self._builds and not self.settings.build_for(engine_kind):
            return (f"no {engine_kind.build_option} given for host {host.name!r}: its "
                    f"{engine_name} tests skip; give {engine_kind.build_example}")
        if (not host.has_gpus and not self.settings.endpoint and not engine_kind.cpu_build
                and not self._installed_path(engine_kind)):
            return (f"runs on the GPU host: {engine_name} has no CPU build here; "
                    f"host {host.name!r} runs engines with a CPU build only (or give "
                    f"{engine_kind.build_option} PATH of an installed one)")
        if logical_model is not None and engine_kind.random_weights_args is None:
            ref = host.resolve_model(logical_model)
            if ref == TINY_MODEL or host.dummy_weights:
                return (f"{engine_name} cannot serve random weights, and host {host.name!r} "
                        f"serves {logical_model!r} with random ones "
                        f"({'the tiny model' if ref == TINY_MODEL else 'dummy_weights'})")
        return None

    def _installed_path(self, engine_kind: EngineKind) -> bool:
        """Whether the user named an existing path as this engine's build."""
        raw = self.settings.build_for(engine_kind)
        return bool(raw) and not str(raw).startswith("docker:") and \
            Path(str(raw)).expanduser().exists()

    # -- models and servers -------------------------------------------------

    def model(self, logical: str) -> ServedModel:
        if self.settings.endpoint:
            # The endpoint serves one model, whatever the test calls it.
            ep = self.endpoint()
            return ServedModel(ep.model, ep.url, "", ep.vocab_size, ep.special_ids)
        if logical not in self._models and self.settings.plan:
            self._models[logical] = self._planned_model(logical)
        if logical not in self._models:
            ref = self.host.resolve_model(logical)
            if ref == TINY_MODEL:
                python = next((b.python for b in self._builds.values() if b.python), None)
                if python is None:
                    raise HostConfigError(
                        f"host {self.host.name!r} serves the tiny model, which is made with "
                        "a locally installed engine's python; none is installed")
                tiny = ensure_tiny_model(python, self.settings.cache_dir,
                                         progress=self.progress)
                # The tiny model ships no weights: the engine makes random ones.
                served = ServedModel(logical, ref, str(tiny.path), tiny.vocab_size,
                                     tiny.special_ids, dummy_weights=True)
            elif Path(ref).is_dir():
                vocab, special = read_local_vocab(Path(ref))
                served = ServedModel(logical, ref, ref, vocab, special,
                                     dummy_weights=self.host.dummy_weights)
            else:
                raise HostConfigError(
                    f"{self.host.source}: model {ref!r} for {logical!r} is not a local folder; "
                    "point [hosts.NAME.models] at a downloaded model directory")
            self._models[logical] = served
        return self._models[logical]

    def _planned_model(self, logical: str) -> ServedModel:
        """The model as a plan names it: where it is (or would be made), nothing made or read
        but a tokenizer already on this machine; the vocabulary is 0 when unknown."""
        ref = self.host.resolve_model(logical)
        # Where ensure_tiny_model makes it. (tiny_model.py stays untouched: its own hash
        # names the model, so editing it would make every cached tiny model stale.)
        tiny = ((self.settings.cache_dir or default_cache_dir()) / "models"
                / f"tiny-llama-{generator_hash()}")
        path = tiny if ref == TINY_MODEL else Path(ref)
        vocab, special = (read_local_vocab(path) if (path / "tokenizer.json").is_file()
                          else (0, frozenset()))
        dummy = ref == TINY_MODEL or self.host.dummy_weights
        return ServedModel(logical, ref, str(path), vocab, special, dummy)

    def launch_spec(self, engine_name: str, logical_model: str, flag_set: FlagSet,
                    host: str = "127.0.0.1", port: int = 0, *, as_given: bool = False
                    ) -> LaunchSpec:
        """What one server of this combination is started with (before any GPU lease):
        without the flags that give their engine default, unless ``as_given``."""
        engine = self.engine(engine_name)
        model = self.model(logical_model)
        random = self.engine_kind(engine_name).random_weights_args if model.dummy_weights \
            else ()
        extra, token_env = secret_flags_to_env(
            (*(random or ()), *self.host.engine_args, *self.settings.engine_args))
        # A flag set may keep the host's env from its server (an arm without the tuning
        # env); what the user passes (--engine-env) still goes in.
        host_env = {k: v for k, v in self.host.env.items() if k not in flag_set.unset}
        env = {**host_env, **dict(self.settings.engine_env), **token_env}
        redact.register_env(dict(flag_set.env))
        flags = flag_set if as_given else shared.launched(self.engine_kind(engine_name),
                                                          flag_set)
        return LaunchSpec(model=model.path,
                          served_model_name=engine.served_model_name(logical_model, model.path),
                          host=host, port=port, api_key=self.api_key, flag_set=flags,
                          extra_args=extra, env=env,
                          gpus_needed=gpus_needed(flag_set, self.host),
                          engine_cpus=self.placement.engine_cpus if self.placement else ())

    def server_key(self, engine_name: str, logical_model: str, flag_set: FlagSet,
                   *, as_given: bool = False) -> str:
        """One server per (engine, build, model, launched flags and env, overrides): flag
        sets that launch the same server share it (servers/shared.py)."""
        spec = self.launch_spec(engine_name, logical_model, flag_set, as_given=as_given)
        return shared.server_key(engine_name, logical_model, spec, flag_set, as_given,
                                 self.engine_description(engine_name).get("build"))

    def server(self, engine_name: str, logical_model: str,
               flag_set: FlagSet) -> RunningServer | Endpoint:
        """The live server for this combination, started on first use (or --endpoint's)."""
        return self.servers(engine_name, logical_model, flag_set)[0]

    def servers(self, engine_name: str, logical_model: str, flag_set: FlagSet,
                count: int = 1) -> list[RunningServer | Endpoint]:
        """``count`` live servers of this combination (instances behind one workload),
        started on first use, each recording ``flag_set`` as what its test asked for."""
        if count < 1:
            raise ValueError(f"server instances must be >= 1, got {count}")
        if self.settings.endpoint:
            return [self.endpoint()]
        group = self._acquire(engine_name, logical_model, flag_set, count, as_given=False)
        # Started without a flag the set gives (its default): only if the server says so.
        resolved = shared.confirmed(self.engine_kind(engine_name), flag_set,
                                    group[0].process.log_path)
        if resolved is None:
            group, resolved = self._acquire(engine_name, logical_model, flag_set, count,
                                            as_given=True), {}
        shared.check_honoured(self.engine_kind(engine_name), flag_set, group[0])
        for server in group:
            server.asked, server.resolved = flag_set, resolved
        return list(group)

    def _acquire(self, engine_name: str, logical_model: str, flag_set: FlagSet, count: int,
                 *, as_given: bool) -> list[RunningServer]:
        key = self.server_key(engine_name, logical_model, flag_set, as_given=as_given)

        def make_spec(host: str, port: int) -> LaunchSpec:
            return self.launch_spec(engine_name, logical_model, flag_set, host, port,
                                    as_given=as_given)

        if count == 1:
            return [self.pool.acquire(key, self.engine(engine_name), make_spec)]
        keys = [f"{key}-instance-{i + 1}-of-{count}" for i in range(count)]
        return self.pool.acquire_group(keys, self.engine(engine_name), make_spec)

    def measurer(self, server: RunningServer | Endpoint, test_id: str, logical_model: str,
                 floors: dict[str, float] | None = None,
                 progress: Progress | None = None,
                 servers: list[RunningServer | Endpoint] | None = None) -> Measurer:
        """A measurer of ``server`` for one test: ``.run(Workload(...))`` warms up, measures
        the session's repeats, writes the result and judges it against the baseline.
        With ``servers`` (instances of one flag set, ``server`` first), each request goes
        to one of them in turn and the figures cover all requests."""
        from pytest_mi300x.load.measurer import Measurer

        model = self.model(logical_model)
        tokenizer = server.engine.tokenizer(server.base_url, server.api_key,
                                            server.spec.served_model_name, model.vocab_size,
                                            model.special_ids, model.path)
        return Measurer(server=server, tokenizer=tokenizer, host=self.host, test_id=test_id,
                        results_dir=self.results_dir, model=model.describe(),
                        engine=self.engine_description(server.engine.name),
                        run_id=self.settings.run_id, repeats=self.settings.repeats,
                        gate=self.gate, floors=floors,
                        telemetry=self.telemetry(tuple(g for s in servers or [server]
                                                       for g in s.spec.gpus)),
                        progress=progress, servers=servers, measured=self.measured,
                        client_cpus=self.placement.frontend_cpus if self.placement else ())

    def close(self) -> None:
        self.pool.close()
        for build in self._builds.values():  # servers down: the cache may evict their builds
            build.release()

    def sweep(self) -> None:
        """Controller, at the end: stop servers of workers that died holding GPUs."""
        if self.host.has_gpus and self.lock_dir.is_dir():
            sweep_orphans(self.lock_dir, self.progress)
