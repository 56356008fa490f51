"""pytest-mi300x: performance-regression tests for LLM serving engines.

The public names below load on first use, so that ``import pytest_mi300x`` (which every
pytest run in a checkout pays through the plugin) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_PUBLIC = {
    "AccuracyCheck": "pytest_mi300x.accuracy.check",
    "DEFAULT_FLAGS": "pytest_mi300x.engines.flags",
    "FlagSet": "pytest_mi300x.engines.flags",
    "flag_sets": "pytest_mi300x.engines.flags",
    "Workload": "pytest_mi300x.workload.workload",
    "Arrivals": "pytest_mi300x.workload.arrivals",
    "RandomDataset": "pytest_mi300x.workload.datasets",
    "JsonlDataset": "pytest_mi300x.workload.jsonl",
    "SharedPrefixDataset": "pytest_mi300x.workload.prefix",
    "ShareGPTDataset": "pytest_mi300x.workload.sharegpt",
    "SyntheticShareGPT": "pytest_mi300x.workload.sharegpt",
    "TraceDataset": "pytest_mi300x.workload.trace",
    "MultiTurnDataset": "pytest_mi300x.workload.conversation",
}

__all__ = ["DEFAULT_FLAGS", "AccuracyCheck", "Arrivals", "FlagSet", "JsonlDataset",
           "MultiTurnDataset", "RandomDataset", "ShareGPTDataset", "SharedPrefixDataset",
           "SyntheticShareGPT", "TraceDataset", "Workload", "__version__", "flag_sets"]

if TYPE_CHECKING:
    from pytest_mi300x.accuracy.check import AccuracyCheck
    from pytest_mi300x.engines.flags import DEFAULT_FLAGS, FlagSet, flag_sets
    from pytest_mi300x.workload.arrivals import Arrivals
    from pytest_mi300x.workload.conversation import MultiTurnDataset
    from pytest_mi300x.workload.datasets import RandomDataset
    from pytest_mi300x.workload.jsonl import JsonlDataset
    from pytest_mi300x.workload.prefix import SharedPrefixDataset
    from pytest_mi300x.workload.sharegpt import ShareGPTDataset, SyntheticShareGPT
    from pytest_mi300x.workload.trace import TraceDataset
    from pytest_mi300x.workload.workload import Workload


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_mi300x' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
