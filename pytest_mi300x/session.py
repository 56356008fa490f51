"""The plugin's per-session state: settings, host, engine install and server pool."""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mi300x.baselines import BaselineStore
from pytest_mi300x.engines.base import Engine, LaunchSpec
from pytest_mi300x.engines.provision import EngineEnvironment, EngineInstall
from pytest_mi300x.engines.tiny_model import ensure_tiny_model, read_local_vocab
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.flags import FlagSet
from pytest_mi300x.gate import Gate
from pytest_mi300x.hosts import TINY_MODEL, HostConfigError, HostProfile
from pytest_mi300x.pool import RunningServer, ServerPool
from pytest_mi300x.settings import Settings


def print_progress(line: str) -> None:
    print(f"[pytest-mi300x] {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServedModel:
    """A logical model name resolved on a host: what the engine loads and its tokenizer facts."""

    logical: str
    ref: str
    path: str
    vocab_size: int
    special_ids: frozenset[int]
    engine_args: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"logical": self.logical, "ref": self.ref, "path": self.path,
                "vocab_size": self.vocab_size}


class PerfSession:
    """Lives in ``config.stash`` for one pytest process (controller or worker)."""

    def __init__(self, settings: Settings, host: HostProfile, results_dir: Path,
                 progress: Callable[[str], None] = print_progress) -> None:
        self.settings = settings
        self.progress = progress
        self.host = host
        self.results_dir = results_dir
        # One key per session: engines accept only it, and it never leaves this process tree.
        self.api_key = secrets.token_urlsafe(24)
        self.pool = ServerPool(results_dir / "servers", max_servers=host.max_servers,
                               start_timeout=host.start_timeout_s)
        self.gate = Gate(BaselineStore(settings.baselines_dir), host.name,
                         update=settings.update_baselines,
                         require=settings.require_baseline,
                         floors={**host.floors, **dict(settings.floors)})
        self._install: EngineInstall | None = None
        self._models: dict[str, ServedModel] = {}

    def install(self) -> EngineInstall:
        """The engine build, provisioned on first use."""
        if self._install is None:
            env = EngineEnvironment(self.settings.vllm_build, self.settings.cache_dir,
                                    progress=self.progress)
            self._install = env.__enter__()
        return self._install

    def unavailable(self, engine_name: str, flag_set: FlagSet,
                    accelerators: tuple[str, ...] = ()) -> str | None:
        """Why this host cannot run the case at all (a skip, not a failure), else None."""
        host = self.host
        if accelerators and host.accelerator not in accelerators:
            return (f"runs on the GPU host: needs {' or '.join(accelerators)}; "
                    f"host {host.name!r} is {host.accelerator}")
        tp = dict(flag_set.flags).get("tensor_parallel_size")
        if isinstance(tp, int) and tp > max(1, host.accelerator_count):
            return (f"runs on the GPU host: tensor parallel {tp} needs {tp} GPUs; "
                    f"host {host.name!r} has {host.accelerator_count}")
        if engine_name != "vllm" and host.accelerator == "cpu":
            return (f"runs on the GPU host: {engine_name} has no CPU build here; "
                    f"host {host.name!r} runs vllm only")
        return None

    def engine(self, name: str) -> Engine:
        if name != "vllm":
            raise HostConfigError(
                f"serving_engine {name!r} is not available on host {self.host.name!r}; "
                "use 'vllm' (TGI runs on GPU hosts only)")
        install = self.install()
        return VLLMEngine(install.python, install.build)

    def engine_description(self) -> dict[str, Any]:
        return self.install().describe()

    def model(self, logical: str) -> ServedModel:
        if logical not in self._models:
            ref = self.host.resolve_model(logical)
            if ref == TINY_MODEL:
                tiny = ensure_tiny_model(self.install(), self.settings.cache_dir,
                                         progress=self.progress)
                # The tiny model ships no weights: the engine makes random ones.
                served = ServedModel(logical, ref, str(tiny.path), tiny.vocab_size,
                                     tiny.special_ids, ("--load-format", "dummy"))
            elif Path(ref).is_dir():
                vocab, special = read_local_vocab(Path(ref))
                served = ServedModel(logical, ref, ref, vocab, special)
            else:
                raise HostConfigError(
                    f"{self.host.source}: model {ref!r} for {logical!r} is not a local folder; "
                    "point [hosts.NAME.models] at a downloaded model directory")
            self._models[logical] = served
        return self._models[logical]

    def server(self, engine_name: str, logical_model: str, flag_set: FlagSet) -> RunningServer:
        """The live server for this combination, started on first use."""
        engine = self.engine(engine_name)
        model = self.model(logical_model)
        extra = (*model.engine_args, *self.host.engine_args, *self.settings.engine_args)
        env = {**self.host.env, **dict(self.settings.engine_env)}
        blob = repr((self.install().build, model.path, extra, sorted(env.items())))
        key = (f"{engine_name}-{logical_model}-{flag_set.name}-{flag_set.digest}-"
               f"{hashlib.sha256(blob.encode()).hexdigest()[:8]}")

        def make_spec(host: str, port: int) -> LaunchSpec:
            return LaunchSpec(model=model.path, served_model_name=logical_model, host=host,
                              port=port, api_key=self.api_key, flag_set=flag_set,
                              extra_args=extra, env=env)

        return self.pool.acquire(key, engine, make_spec)

    def close(self) -> None:
        self.pool.close()
