"""Hugging Face TGI (text-generation-inference) behind the Engine protocol.

What differs from vLLM and matters for a fair comparison:
- ``--num-shard`` is always explicit: TGI counts GPUs only from
  CUDA_VISIBLE_DEVICES, so on ROCm it would otherwise run on one GPU unnoticed.
- Several servers on one host need their own ``--port``, ``--prometheus-port``,
  ``--shard-uds-path`` and ``--master-port`` (torch distributed).
- Its router ignores ``ignore_eos``: output lengths cannot be forced, so the
  measurement reports real output lengths (see ``metrics.output_length_drift``).
- Version and commit sha come from ``/info``; readiness from ``/health``.
- Prompt lengths are counted by its ``/tokenize``; it has no ``/detokenize``, so random
  ids become text through the served folder's tokenizer.json (workload/vocab.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pytest_mi300x.engines.base import BuiltEngine, EngineUnsupported, LaunchSpec
from pytest_mi300x.engines.flags import FlagSet, FlagValue, cli_name
from pytest_mi300x.net import free_port, get_json
from pytest_mi300x.workload.datasets import Tokenizer
from pytest_mi300x.workload.tokenizer import TGIServedTokenizer
from pytest_mi300x.workload.vocab import UnsupportedTokenizer, VocabDecoder

SECRET_ENV = "API_KEY"
"""TGI reads ``--api-key`` from this env var: the key stays off the command line."""

LAUNCHER_FLAGS = frozenset({
    "model-id", "revision", "validation-workers", "sharded", "num-shard", "quantize",
    "speculate", "dtype", "kv-cache-dtype", "trust-remote-code", "max-concurrent-requests",
    "max-best-of", "max-stop-sequences", "max-top-n-tokens", "max-input-tokens",
    "max-input-length", "max-total-tokens", "waiting-served-ratio", "max-batch-prefill-tokens",
    "max-batch-total-tokens", "max-waiting-tokens", "max-batch-size", "cuda-graphs", "hostname",
    "port", "prometheus-port", "shard-uds-path", "master-addr", "master-port",
    "huggingface-hub-cache", "weights-cache-override", "disable-custom-kernels",
    "cuda-memory-fraction", "rope-scaling", "rope-factor", "json-output", "otlp-endpoint",
    "otlp-service-name", "cors-allow-origin", "api-key", "watermark-gamma", "watermark-delta",
    "tokenizer-config-path", "disable-grammar-support", "max-client-batch-size",
    "lora-adapters", "usage-stats", "payload-limit", "enable-prefill-logprobs",
})
"""``text-generation-launcher --help`` as documented (docs/source/reference/launcher.md),
plus ``--prometheus-port`` of TGI 3.x."""

OWNED_FLAGS = frozenset({"model-id", "num-shard", "sharded", "hostname", "port",
                         "prometheus-port", "shard-uds-path", "master-port", "api-key"})
"""Flags the harness sets itself (uniqueness per server, the shard count, the key)."""

METRIC_SERIES: dict[str, str] = {
    "queue_time_sum": "tgi_request_queue_duration_sum",
    "queue_time_count": "tgi_request_queue_duration_count",
    "generation_tokens": "tgi_request_generated_tokens_sum",
    "running": "tgi_batch_current_size",
    "waiting": "tgi_queue_size",
}
"""TGI's documented series; it has no prefix-cache, preemption or KV-use series."""

SHARDS_FROM = "tensor-parallel-size"
"""A flag set's tensor-parallel size becomes TGI's --num-shard (via the GPU lease)."""


def _launcher_flags(flag_set: FlagSet) -> FlagSet:
    return replace(flag_set, flags=tuple((k, v) for k, v in flag_set.flags
                                         if cli_name(k) != SHARDS_FROM))


@dataclass(frozen=True)
class TGIEngine:
    """``text-generation-launcher`` (a local install, or the image's entrypoint in docker)."""

    build: str
    launcher: str = "text-generation-launcher"
    name: str = "tgi"
    # Its router hard-codes ignore_eos_token false: requests stop at EOS.
    exact_output_lengths: bool = False
    cache_salt_field: str | None = None
    hub_cache: str | None = None
    """In an image: the Hugging Face hub cache, where TGI keeps its TunableOp results
    (``tunableop_<model>_tp<N>_rank<R>.csv``; by default under /data, lost with --rm): on
    the host's cache mount, GEMMs are tuned once per image, not at every start."""

    def command(self, spec: LaunchSpec) -> list[str]:
        shards = max(1, spec.gpus_needed)
        return [
            self.launcher,
            "--model-id", spec.model,
            "--hostname", spec.host,
            "--port", str(spec.port),
            "--num-shard", str(shards),
            "--sharded", "true" if shards > 1 else "false",
            "--prometheus-port", str(free_port()),
            "--shard-uds-path", f"/tmp/pytest-mi300x-tgi-{spec.port}",
            "--master-port", str(free_port()),
            "--usage-stats", "off",
            *_launcher_flags(spec.flag_set).to_argv(),
            *spec.extra_args,
        ]

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        cache = {"HUGGINGFACE_HUB_CACHE": self.hub_cache} if self.hub_cache else {}
        return {**cache, **spec.env, **dict(spec.flag_set.env), SECRET_ENV: spec.api_key}

    @property
    def health_path(self) -> str:
        return "/health"

    def version(self, base_url: str, api_key: str) -> str:
        info = get_json(f"{base_url}/info", api_key)
        version, sha = info.get("version", "unknown"), info.get("sha")
        return f"{version}+{str(sha)[:12]}" if sha else str(version)

    @property
    def metric_series(self) -> dict[str, str]:
        return METRIC_SERIES

    def served_model_name(self, logical: str, model_path: str) -> str:
        return model_path  # TGI serves one model, under the id it was launched with

    def tokenizer(self, base_url: str, api_key: str, served_name: str, vocab_size: int,
                  special_ids: frozenset[int], model_path: str) -> Tokenizer:
        try:
            decoder = VocabDecoder.from_model_dir(model_path)
        except UnsupportedTokenizer as exc:
            raise EngineUnsupported(f"TGI has no /detokenize, and the model's tokenizer.json "
                                    f"cannot turn ids into text here: {exc}") from None
        counter = TGIServedTokenizer(base_url, api_key, vocab_size, special_ids, decoder)
        try:
            counter.encode("probe")
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise EngineUnsupported(f"TGI's /tokenize does not count for this model ({exc}); "
                                    "prompt lengths cannot be made exact") from None
        return counter

    @property
    def auth_probe(self) -> tuple[str, str]:
        return ("POST", "/tokenize")  # TGI keys generation and /tokenize, not /v1/models

    def refusal(self, log_tail: str) -> str | None:
        return None

    def cleanup_argv(self, spec: LaunchSpec) -> list[str] | None:
        return None  # a local process group: stopping it stops everything

    def skip_reason(self, flag_set: FlagSet, version: str) -> str | None:
        for name in _launcher_flags(flag_set).flag_names:
            bare = name.removeprefix("no-")
            if bare in OWNED_FLAGS:
                return (f"flag set {flag_set.name!r} sets --{bare}, which the harness sets "
                        "itself for TGI; use tensor_parallel_size for the shard count")
            if bare not in LAUNCHER_FLAGS:
                return f"TGI {version} has no --{bare} (a vLLM flag); this case is vLLM-only"
        return None


@dataclass(frozen=True)
class TGIKind:
    """TGI as the harness names and builds it: GPU hosts only."""

    name: str = "tgi"
    build_option: str = "--tgi-build"
    build_example: str = "docker:ghcr.io/huggingface/text-generation-inference:<version>-rocm"
    version_argv: tuple[str, ...] = ("text-generation-launcher", "--version")
    version_path: str = "/info"
    exact_output_lengths: bool = False
    cache_salt_field: str | None = None
    cpu_build: bool = False
    # TGI loads real weights only: hosts serving random ones (the tiny model) skip it.
    random_weights_args: tuple[str, ...] | None = None
    owned_flags: frozenset[str] = OWNED_FLAGS

    @property
    def metric_series(self) -> Mapping[str, str]:
        return METRIC_SERIES

    @property
    def resolved_defaults(self) -> Mapping[str, FlagValue]:
        return {}  # not known: every flag set of TGI gets the server its flags describe

    def resolved_config(self, log_text: str) -> Mapping[str, str]:
        return {}

    def in_image(self, build: str, run: Callable[[Sequence[str]], str] | None = None,
                 cache_root: str | None = None) -> TGIEngine:
        return TGIEngine(build, hub_cache=f"{cache_root}/tgi-hub" if cache_root else None)

    def from_path(self, build: str, path: Path) -> BuiltEngine:
        launcher = path / "bin" / "text-generation-launcher" if path.is_dir() else path
        proc = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                              timeout=120, check=False)
        if proc.returncode != 0:
            raise ValueError(f"`{launcher} --version` exited {proc.returncode}")
        version = proc.stdout.strip().split()[-1] if proc.stdout.strip() else "unknown"
        return BuiltEngine(TGIEngine(build, str(launcher)), version,
                           {"build": build, "launcher": str(launcher), "version": version})

    def provision(self, build: str, cache_dir: Path | None,
                  progress: Callable[[str], None], cache_limit: int | None = None
                  ) -> BuiltEngine:
        raise EngineUnsupported("runs on the GPU host: TGI has no CPU build here")

    def planned(self, build: str, cache_dir: Path | None) -> TGIEngine:
        path = Path(build).expanduser()
        launcher = path if path.is_file() or path.name == self.version_argv[0] else (
            path / "bin" / self.version_argv[0])
        return TGIEngine(build, str(launcher))


KIND = TGIKind()
