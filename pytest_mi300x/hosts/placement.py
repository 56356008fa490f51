"""Which CPUs a CPU host's engine computes on, and which run everything else.

On a CPU host the engine's compute threads (vLLM's OpenMP worker) and everything around
them (its API server and engine-core processes, and this project's load client) share a
few cores. vLLM binds its worker to some cores and reserves the rest, but leaves its own
front end and the client free to land on the worker's core; measured on 2 cores, one run
in two to five was then 15-25% slower, at any run length. Pinning the front end and the
client to the reserved core took the within-start spread of a burst's throughput from 8%
to 2% (docs/measurements.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """The engine's compute CPUs and the front end's (server processes and client)."""

    engine_cpus: tuple[int, ...]
    frontend_cpus: tuple[int, ...]

    @classmethod
    def split(cls, cpus: Sequence[int], frontend: int) -> Placement | None:
        """The last ``frontend`` of ``cpus`` for the front end, the others for the engine;
        None when there are too few to split (or ``frontend`` is 0: no placement)."""
        ordered = sorted(set(cpus))
        if frontend <= 0 or len(ordered) <= frontend:
            return None
        return cls(tuple(ordered[:-frontend]), tuple(ordered[-frontend:]))

    @classmethod
    def for_this_machine(cls, frontend: int) -> Placement | None:
        if not hasattr(os, "sched_getaffinity"):
            return None  # not Linux: the OS places everything
        return cls.split(sorted(os.sched_getaffinity(0)), frontend)

    def describe(self) -> dict[str, list[int]]:
        return {"engine_cpus": list(self.engine_cpus),
                "frontend_cpus": list(self.frontend_cpus)}


def cpu_list(cpus: Sequence[int]) -> str:
    """``0,2,3`` as ``0,2-3``: the form taskset and vLLM's thread binding read."""
    parts: list[str] = []
    ordered = sorted(cpus)
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


@contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """This process (and what it spawns meanwhile) on ``cpus``; restored on exit."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
