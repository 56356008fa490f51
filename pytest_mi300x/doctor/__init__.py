"""The host doctor: what a fleet checks before its first night and at the start of every
night, each check one line with its fix (``pytest-mi300x doctor``; the nightly calls
``run_checks``; every pytest session on a GPU host runs the host's part before its first
test). base.py holds what checks share, checks.py the host's checks, image.py the engine
build's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pytest_mi300x.doctor.base import Check, Facts, Tools
from pytest_mi300x.doctor.checks import (
    check_disk,
    check_gpus,
    check_identity,
    check_kfd,
    check_numa,
    check_numbering,
    check_partitions,
    check_power,
)
from pytest_mi300x.doctor.image import check_image
from pytest_mi300x.hosts.profile import HostProfile

__all__ = ["HOST_CHECKS", "Check", "Tools", "describe", "run_checks"]

HOST_CHECKS = ("gpus", "partitions", "numa_balancing", "power", "identity", "numbering")
"""What every session on a GPU host checks before its first test (cheap: no image, no
docker)."""


def run_checks(host: HostProfile, build: str | None = None, *, tools: Tools | None = None,
               only: Sequence[str] | None = None) -> list[Check]:
    """Every check for ``host`` (``only``: these names), with ``build`` (``docker:IMAGE``,
    a venv path, or the cpu host's pip build) for the image checks. A failed check means
    the host is not fit to measure on tonight."""
    tools = tools or Tools()
    facts = Facts(host, tools)
    image = build.removeprefix("docker:") if build and build.startswith("docker:") else None
    checks: dict[str, Callable[[], Check]] = {
        "gpus": lambda: check_gpus(host, facts),
        "partitions": lambda: check_partitions(host, facts),
        "numa_balancing": lambda: check_numa(host, tools),
        "power": lambda: check_power(host, facts),
        "identity": lambda: check_identity(host, facts),
        "numbering": lambda: check_numbering(host, facts),
        "image": lambda: check_image(host, build, tools),
        "kfd": lambda: check_kfd(host, image, tools),
        "disk": lambda: check_disk(host, tools),
    }
    return [run() for name, run in checks.items() if only is None or name in only]


def describe(checks: Sequence[Check]) -> dict[str, Any]:
    return {"ok": not any(c.failed for c in checks), "checks": [c.describe() for c in checks]}
