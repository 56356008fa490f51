"""The plan's dry run of a test's body: the workloads it would hand ``perf``, ``capacity``
or ``claim_sides``, recorded instead of run, so the plan can check each against the host's
roofline. Nothing starts: the body gets recorders for those fixtures, its parameters, and
the plugin's own cheap fixtures (``sharegpt_dataset``, ``slo_targets``); a body that needs
any other fixture is not dry-run, and the plan says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_mi300x.session import PerfSession
    from pytest_mi300x.workload.workload import Workload


@dataclass
class DryRun:
    """What one test body handed over: (workload, sweep ladder) pairs, and why the dry run
    stopped early when it did."""

    workloads: list[tuple[Workload, tuple[float, ...]]] = field(default_factory=list)
    note: str = ""

    def run(self, workload: Workload) -> None:
        self.workloads.append((workload, ()))

    def capacity(self, workload: Workload, rates: list[float], *args: Any,
                 **kwargs: Any) -> None:
        self.workloads.append((workload, tuple(rates)))


class _ClaimSides:
    """``claim_sides`` for a dry run: a side's workload is recorded, nothing judged."""

    def __init__(self, into: DryRun) -> None:
        self.into = into

    def measure(self, test: str, flag_set: Any, workload: Workload, **kwargs: Any) -> None:
        self.into.run(workload)

    def check(self, *args: Any, **kwargs: Any) -> None:
        return None

    def only_on(self, *args: Any, **kwargs: Any) -> None:
        return None


def dry_run(item: pytest.Item, session: PerfSession) -> DryRun:
    """Call ``item``'s body with recorders; never raises (a failure becomes the note)."""
    from pytest_mi300x.plugin.fixtures import DEFAULT_SLOS, sharegpt_maker

    out = DryRun()
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    cheap: dict[str, Callable[[], Any]] = {
        "perf": lambda: out, "capacity": lambda: out.capacity,
        "claim_sides": lambda: _ClaimSides(out),
        "sharegpt_dataset": lambda: sharegpt_maker(session),
        "slo_targets": lambda: dict(DEFAULT_SLOS)}
    info = getattr(item, "_fixtureinfo", None)
    args: dict[str, Any] = {}
    for name in getattr(info, "argnames", ()):
        if name in params:
            args[name] = params[name]
        elif name in cheap:
            args[name] = cheap[name]()
        else:
            out.note = f"not dry-run: its body needs fixture {name!r}, which a plan does not run"
            return out
    function = getattr(item, "obj", None)
    if function is None:
        out.note = "not dry-run: not a test function"
        return out
    try:
        function(**args)
    except pytest.skip.Exception as exc:
        out.note = f"its body skips: {exc}"
    except Exception as exc:  # a body that uses a result goes as far as it can
        out.note = f"dry run stopped at {type(exc).__name__}: {exc}"
    return out
