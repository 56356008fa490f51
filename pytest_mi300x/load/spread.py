"""A load run from this process or spread over several (when one process saturates a
core): ``run_load_sync``, the blocking entry the measurer uses. A spread run sends one
schedule from every process and merges their records into one LoadRun. Every process
times on perf_counter, which is CLOCK_MONOTONIC on Linux: one system-wide clock, so their
records share one time base. (Here, not in load/client.py: the client is what each
process runs, and must not import what spreads it.)"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from time import perf_counter
from typing import Any

from pytest_mi300x.load.client import STALL_TIMEOUT_S, Progress, run_load
from pytest_mi300x.load.health import ClientHealth
from pytest_mi300x.load.records import LoadRun, RequestRecord
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest


def run_load_sync(
    *,
    base_url: str | Sequence[str],
    api_key: str,
    model: str,
    requests: Sequence[PromptRequest],
    arrivals: Arrivals,
    seed: int,
    request_timeout: float = 600.0,
    endpoint: str = "completions",
    processes: int = 1,
    on_progress: Progress | None = None,
    stall_timeout: float = STALL_TIMEOUT_S,
    extra_body: Mapping[str, object] | None = None,
) -> LoadRun:
    """Blocking wrapper around `run_load`; `processes` > 1 spreads it over processes.
    `extra_body`: fields added to every request (the engine's prefix-cache salt)."""
    kwargs: dict[str, Any] = dict(base_url=base_url, api_key=api_key, model=model,
                                  requests=requests, arrivals=arrivals, seed=seed,
                                  request_timeout=request_timeout, endpoint=endpoint,
                                  stall_timeout=stall_timeout, extra_body=extra_body)
    if processes > 1:
        return run_load_spread(processes=processes, **kwargs)
    return asyncio.run(run_load(**kwargs, on_progress=on_progress))


def _worker(conn: Any, kwargs: dict[str, Any]) -> None:
    """A load process: say ready once imported, wait for the shared start, run, report."""
    try:
        conn.send("ready")
        start_at = conn.recv()
        run = asyncio.run(run_load(**kwargs, start_at=start_at))
        conn.send({"records": [r.to_dict() for r in run.records],
                   "health": asdict(run.health[0]), "cpu": run.client_cpu_time,
                   "end": run.clock_start + run.duration, "started_at": run.started_at})
    except BaseException as exc:  # the parent raises it with the worker's reason
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _lanes(requests: Any, processes: int) -> list[int]:
    """The process of each request: request i goes to i % processes, except that a
    conversation's later turns follow its first (they wait on each other's completion)."""
    lanes: list[int] = []
    for i, request in enumerate(requests):
        after = request.after
        lanes.append(lanes[after] if after is not None and after < i else i % processes)
    return lanes


# After every process is ready: time for the start message to reach them all.
_START_LEAD_S = 0.2
_READY_TIMEOUT_S = 120.0


def run_load_spread(*, processes: int, **kwargs: Any) -> LoadRun:
    """One schedule sent from `processes` load processes, merged into one LoadRun.

    Request i goes to process i % processes. All processes start at one
    perf_counter instant (CLOCK_MONOTONIC is system-wide on Linux, so every
    timestamp shares one time base) and the merged duration runs from that
    start to the last completion of any process. Each process's health is kept.
    """
    if processes < 1:
        raise ValueError(f"run_load_spread: processes must be >= 1, got {processes}")
    if time.get_clock_info("perf_counter").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        raise RuntimeError("run_load_spread needs perf_counter on CLOCK_MONOTONIC (Linux) "
                           "so processes share one clock; use processes=1 here")
    n = len(kwargs["requests"])
    arrivals: Arrivals = kwargs["arrivals"]
    if arrivals.max_concurrency is not None:
        # One cap split evenly keeps the total cap; the remainder goes to the first few.
        caps = [arrivals.max_concurrency // processes + (i < arrivals.max_concurrency % processes)
                for i in range(processes)]
        if min(caps) < 1:
            raise ValueError(f"run_load_spread: max_concurrency {arrivals.max_concurrency} "
                             f"is below {processes} processes; use fewer processes")
    else:
        caps = [None] * processes  # type: ignore[list-item]
    jobs = []
    lanes = _lanes(kwargs["requests"], processes)
    for i in range(processes):
        sub = [k for k in range(n) if lanes[k] == i]
        if sub:
            jobs.append({**kwargs, "requests": list(kwargs["requests"]),
                         "arrivals": replace(arrivals, max_concurrency=caps[i]),
                         "subset": sub})
    # Spawned, not forked: no inherited event loops or held locks. Each process
    # imports, says ready, and only then is the common start instant set, so
    # slow imports never eat into the schedule.
    ctx = multiprocessing.get_context("spawn")
    links = []
    workers = []
    try:
        for job in jobs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, job), daemon=True)
            proc.start()
            links.append(parent)
            workers.append(proc)
        for link in links:
            if not link.poll(_READY_TIMEOUT_S):
                raise RuntimeError(f"run_load_spread: a load process was not ready within "
                                   f"{_READY_TIMEOUT_S:g} s")
            link.recv()
        start_at = perf_counter() + _START_LEAD_S
        for link in links:
            link.send(start_at)
        parts = [link.recv() for link in links]
    finally:
        for proc in workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise RuntimeError(f"run_load_spread: a load process failed: {errors[0]}")
    records = sorted((RequestRecord(**r) for part in parts for r in part["records"]),
                     key=lambda r: r.index)
    return LoadRun(
        records=records,
        duration=max(p["end"] for p in parts) - start_at,
        started_at=min(p["started_at"] for p in parts),
        arrivals={**arrivals.describe(), "processes": len(jobs)},
        client_cpu_time=sum(p["cpu"] for p in parts),
        health=[ClientHealth(**p["health"]) for p in parts],
        endpoint=kwargs.get("endpoint", "completions"),
        clock_start=start_at,
    )
