"""Engine names to engines: the one place that lists them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pytest_mi300x.engines import tgi, vllm
from pytest_mi300x.engines.base import EngineKind

ENGINES: Mapping[str, EngineKind] = MappingProxyType({k.name: k for k in (vllm.KIND, tgi.KIND)})


class UnknownEngine(ValueError):
    """An engine name no registered engine has."""


def kind(name: str) -> EngineKind:
    try:
        return ENGINES[name]
    except KeyError:
        raise UnknownEngine(f"serving_engine {name!r} is not known; use one of "
                            f"{', '.join(sorted(ENGINES))}") from None
