"""pytest-mi300x: performance-regression tests for LLM serving engines."""

from __future__ import annotations

__version__ = "0.1.0"

from pytest_mi300x.engines.flags import DEFAULT_FLAGS, FlagSet, flag_sets  # noqa: E402
from pytest_mi300x.load.measurer import Workload  # noqa: E402
from pytest_mi300x.workload.arrivals import Arrivals  # noqa: E402
from pytest_mi300x.workload.datasets import RandomDataset  # noqa: E402
from pytest_mi300x.workload.jsonl import JsonlDataset  # noqa: E402
from pytest_mi300x.workload.prefix import SharedPrefixDataset  # noqa: E402
from pytest_mi300x.workload.sharegpt import ShareGPTDataset, SyntheticShareGPT  # noqa: E402

__all__ = ["DEFAULT_FLAGS", "Arrivals", "FlagSet", "JsonlDataset", "RandomDataset",
           "ShareGPTDataset", "SharedPrefixDataset", "SyntheticShareGPT", "Workload",
           "flag_sets", "__version__"]
