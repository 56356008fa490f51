"""CPU sharing on the CPU host: the engine's compute threads and the load client apart.

vLLM's CPU backend spins its OpenMP threads on the cores it binds. A client
scheduled on one of those cores preempts a spinning thread and every barrier
waits for it: on 2 cores that inflated median TTFT from 24 ms to ~600 ms on the
same server and prompts. So the engine binds all cores but the last, and the
client runs on the last.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Set
from contextlib import contextmanager

OMP_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def available_cpus() -> frozenset[int]:
    return frozenset(os.sched_getaffinity(0))


def split(cpus: Set[int]) -> tuple[frozenset[int], frozenset[int]] | None:
    """(engine cpus, client cpus), or None when there are too few to split."""
    if len(cpus) < 2:
        return None
    ordered = sorted(cpus)
    return frozenset(ordered[:-1]), frozenset(ordered[-1:])


def cpu_list(cpus: Set[int]) -> str:
    """The comma form vLLM's OMP binding variable takes."""
    return ",".join(str(c) for c in sorted(cpus))


@contextmanager
def pinned(cpus: Set[int] | None) -> Iterator[None]:
    """Run the block on ``cpus`` (nothing changes for None), then restore."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
