"""An OpenAI-compatible server someone else runs (``--endpoint URL``): a Kubernetes
service, a shared staging endpoint, a server started by hand.

The suite's workloads run against it as they would against a server of their own, with
three differences: nothing is started or stopped (a flag set other than the engine's
defaults needs its own server, so such tests skip), the engine is whatever the endpoint
reports (vLLM's /version, TGI's /info), and its figures go to baselines of their own
(``baselines/endpoint-<host-port>/``). Prompt lengths are still exact: they are counted
by the endpoint's own /tokenize (vLLM), so an endpoint without it cannot run them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_mi300x.engines.base import EngineKind
from pytest_mi300x.engines.flags import DEFAULT_FLAGS, FlagSet
from pytest_mi300x.engines.registry import ENGINES
from pytest_mi300x.net import get_json, get_status, post_json
from pytest_mi300x.results.files import slug
from pytest_mi300x.servers.process import ServerError, ServerExited
from pytest_mi300x.workload.datasets import Tokenizer
from pytest_mi300x.workload.tokenizer import ServedTokenizer

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
"""Where the endpoint's API key is read from unless --endpoint-key-env names another."""
_VOCAB_LIMIT = 1 << 22


class EndpointError(ServerError):
    """The endpoint cannot be used (unreachable, no model, no /tokenize)."""


@dataclass(frozen=True)
class EndpointEngine:
    """The Engine protocol's read side for a server this session did not start."""

    name: str
    exact_output_lengths: bool = True
    metric_series: Mapping[str, str] = field(default_factory=dict)
    health_path: str = "/health"
    cache_salt_field: str | None = None

    def version(self, base_url: str, api_key: str) -> str:
        return probe_version(base_url, api_key)[1]

    def skip_reason(self, flag_set: FlagSet, version: str) -> str | None:
        return None

    def tokenizer(self, base_url: str, api_key: str, served_name: str, vocab_size: int,
                  special_ids: frozenset[int], model_path: str) -> Tokenizer:
        return ServedTokenizer(base_url, api_key, served_name, vocab_size, special_ids)

    def served_model_name(self, logical: str, model_path: str) -> str:
        return logical

    def command(self, spec: Any) -> list[str]:
        raise EndpointError("an endpoint is not started by this session")

    def environment(self, spec: Any) -> dict[str, str]:
        return {}

    def cleanup_argv(self, spec: Any) -> list[str] | None:
        return None

    @property
    def auth_probe(self) -> tuple[str, str]:
        return ("GET", "/v1/models")

    def refusal(self, log_tail: str) -> str | None:
        return None


@dataclass(frozen=True)
class EndpointSpec:
    """What the measurer reads of a launch spec."""

    base_url: str
    api_key: str
    served_model_name: str
    flag_set: FlagSet = DEFAULT_FLAGS
    gpus: tuple[int, ...] = ()


class NoLog:
    """An endpoint's log is not ours to read."""

    log_path = None

    def log_tail(self, lines: int = 60) -> str:
        return "(an existing endpoint: its server log is wherever it runs)"


def probe_version(base_url: str, api_key: str) -> tuple[EngineKind | None, str, dict[str, Any]]:
    """(engine kind, version, what it answered): the first registered engine whose version
    path (vLLM's /version, TGI's /info) answers with a version; None when none does."""
    for engine_kind in ENGINES.values():
        try:
            body = get_json(f"{base_url}{engine_kind.version_path}", api_key)
        except (urllib.error.URLError, OSError, ValueError):
            continue
        if isinstance(body, dict) and "version" in body:
            return engine_kind, str(body["version"]), body
    return None, "unknown", {}


def probe_vocab(base_url: str, api_key: str, model: str) -> tuple[int, frozenset[int]]:
    """(vocab size, special ids) of the endpoint's tokenizer: the first token id a
    one-token completion refuses (vLLM: "Token id N is out of vocabulary"), found by
    bisection in about 22 requests, and the ids /tokenize adds to "" (BOS)."""
    def accepted(token: int) -> bool:
        status, body = post_json(f"{base_url}/v1/completions",
                                 {"model": model, "prompt": [token], "max_tokens": 1},
                                 api_key, timeout=60.0)
        if status not in (200, 400):
            raise EndpointError(f"{base_url}/v1/completions answered {status} to a one-token "
                                f"request: {body[:200].decode(errors='replace')}")
        return status == 200

    if not accepted(0):
        raise EndpointError(f"{base_url}: a completion of token id 0 was refused; the "
                            "endpoint must take token-id prompts (vLLM) to size its "
                            "vocabulary")
    if accepted(_VOCAB_LIMIT):
        raise EndpointError(f"{base_url}: token id {_VOCAB_LIMIT} was accepted; cannot size "
                            "the vocabulary")
    low, high = 0, _VOCAB_LIMIT  # low accepted, high refused
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if accepted(middle) else (low, middle)
    status, body = post_json(f"{base_url}/tokenize", {"model": model, "prompt": "",
                                                      "add_special_tokens": True}, api_key)
    if status != 200:
        raise EndpointError(f"{base_url}/tokenize answered {status}: prompts of exact length "
                            "are counted by the endpoint's own /tokenize (vLLM)")
    return high, frozenset(int(t) for t in json.loads(body).get("tokens", []))


@dataclass
class Endpoint:
    """An existing server, shaped like the pool's RunningServer for the measurer."""

    url: str
    api_key: str
    model: str
    engine: EndpointEngine
    version: str
    version_info: dict[str, Any]
    models: Sequence[str]
    vocab_size: int
    special_ids: frozenset[int]
    process: NoLog = field(default_factory=NoLog)
    generation: int = 1
    healthy: bool = True
    """Set False when its streams stalled; an endpoint is not ours to replace, so the
    next test finds it as it is."""

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def key(self) -> str:
        return f"endpoint-{self.url}"

    @property
    def spec(self) -> EndpointSpec:
        return EndpointSpec(self.url, self.api_key, self.model)

    @property
    def label(self) -> str:
        """Baselines live under ``endpoint-<host-port-path>``: one set per endpoint."""
        return endpoint_label(self.url)

    def check_alive(self, during: str, grace_s: float = 0.0) -> None:
        # Not ours to wait on: its health answer decides at once (grace_s is the pool's).
        status = get_status(f"{self.url}{self.engine.health_path}", self.api_key, timeout=10.0)
        if status != 200:
            raise ServerExited(f"endpoint {self.url} stopped answering {during} "
                               f"(GET {self.engine.health_path}: {status or 'no answer'})",
                               self.process.log_tail())

    def refuses(self, engine_name: str, flag_set: FlagSet) -> str | None:
        """Why a test of ``engine_name`` with ``flag_set`` cannot be measured here (a skip),
        else None."""
        # The engine first: a flag set cannot be judged on a server of another engine.
        if self.engine.name not in (engine_name, "openai"):
            return f"the endpoint {self.url} serves {self.engine.name}, not {engine_name}"
        if flag_set.flags or flag_set.env:
            return (f"flag set {flag_set.name!r} needs a server of its own "
                    f"({' '.join(flag_set.to_argv()) or 'env ' + str(dict(flag_set.env))}); "
                    f"--endpoint measures {self.url} as it runs")
        return None

    def describe(self) -> dict[str, Any]:
        return {"engine": self.engine.name, "endpoint": self.url, "version": self.version,
                "version_info": self.version_info, "models": list(self.models),
                "flag_set": DEFAULT_FLAGS.describe(), "extra_args": [], "env": {},
                "argv": [], "generation": self.generation, "gpus": []}


def endpoint_label(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return "endpoint-" + slug(f"{parts.hostname or 'host'}-{parts.port or ''}{parts.path}")


def connect(url: str, api_key: str, model: str | None = None) -> Endpoint:
    """Probe the endpoint once: models, engine and version, tokenizer vocabulary."""
    base = url.rstrip("/").removesuffix("/v1")
    try:
        listed = get_json(f"{base}/v1/models", api_key)
    except urllib.error.HTTPError as exc:
        raise EndpointError(f"endpoint {base}: GET /v1/models answered {exc.code}"
                            + ("; is the API key set (--endpoint-key-env)?"
                               if exc.code in (401, 403) else "")) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise EndpointError(f"endpoint {base} does not answer GET /v1/models ({exc}); "
                            "check --endpoint") from None
    models = [str(m.get("id")) for m in listed.get("data", []) if isinstance(m, dict)]
    if model is None:
        if len(models) != 1:
            raise EndpointError(f"endpoint {base} serves {models or 'no model'}; name one with "
                                "--endpoint-model")
        model = models[0]
    elif model not in models:
        raise EndpointError(f"endpoint {base} serves {models}, not {model!r}")
    found, version, info = probe_version(base, api_key)
    # An unidentified OpenAI-compatible server: no /metrics series known, and outputs
    # not assumed to keep to the asked lengths.
    engine = (EndpointEngine("openai", exact_output_lengths=False) if found is None else
              EndpointEngine(found.name, exact_output_lengths=found.exact_output_lengths,
                             metric_series=found.metric_series,
                             cache_salt_field=found.cache_salt_field))
    vocab, special = probe_vocab(base, api_key, model)
    return Endpoint(base, api_key, model, engine, version, info, models, vocab, special)
