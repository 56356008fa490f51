"""Streaming load generator for /v1/completions (or chat), timed as `vllm bench serve` times it.

The hot path speaks SSE over aiohttp, as vllm bench serve's client does. The
alternatives measured worse on the CPU host (2 cores shared with the engine),
same server and prompts at 10 req/s: the openai client's per-chunk objects gave
about 6x the median TTFT and twice the client CPU; raw httpx2 sent requests a
median 195 ms behind schedule (median TTFT 820 ms) where aiohttp kept to 1 ms
(median TTFT 19.5 ms).

Every time is `time.perf_counter()`, which on Linux is CLOCK_MONOTONIC: one
system-wide clock, so records from several load processes (`run_load_spread`)
share one time base.

The client watches itself (`ClientHealth`): its CPU use during the run, how late
requests left against their schedule, and how late its event loop woke. A run
whose client was saturated is invalid (metrics.find_problems says why).

Chat endpoint: TTFT is the first chunk whose delta carries content. vLLM's chat
stream opens with a role-only chunk that can leave before prefill is done (with
chunked prefill), which `vllm bench serve` counts as the first token (vLLM
#15106): its chat TTFT reads too good. Measure TTFT on /v1/completions unless
the chat path is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from time import perf_counter
from typing import Any

import aiohttp
import numpy as np

from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest

# `"choices":[{` (compact or spaced) near the chunk's start: vLLM and TGI put
# choices before the text, so the first few hundred bytes decide.
_TOKEN_CHUNK = re.compile(rb'"choices"\s*:\s*\[\s*\{')
_HEAD = 512

# Connect and pool waits are bounded apart from the whole-request timeout, so a
# dead server fails fast instead of after request_timeout.
_CONNECT_TIMEOUT = 10.0


@dataclass
class RequestRecord:
    """What the client saw for one request. Times are seconds (perf_counter based)."""

    index: int
    prompt_len: int  # target
    output_len: int  # target
    send_time: float = 0.0  # since run start, just before the POST
    ttft: float | None = None  # first chunk with a non-empty choices list
    chunk_times: list[float] = field(default_factory=list)  # since send_time, choices chunks
    latency: float | None = None  # to the last choices chunk (usage chunk excluded)
    prompt_tokens: int | None = None  # server usage
    completion_tokens: int | None = None  # server usage
    error: str | None = None
    queue_time: float = 0.0  # waiting on the client concurrency cap; not part of TTFT
    dispatch_lag: float = 0.0  # how late the client picked it up against its schedule

    @property
    def ok(self) -> bool:
        """Succeeded as vllm bench serve counts success: no error and a first chunk."""
        return self.error is None and self.ttft is not None and self.latency is not None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class LoadRun:
    """All records of one load run plus its wall-clock frame."""

    records: list[RequestRecord]
    duration: float  # before first dispatch to after last completion
    started_at: float  # unix time
    arrivals: dict[str, object]
    client_cpu_time: float = 0.0  # process CPU seconds during the run: is the client the limit?
    health: list[ClientHealth] = field(default_factory=list)  # one per load process
    endpoint: str = "completions"
    clock_start: float = 0.0  # perf_counter (CLOCK_MONOTONIC) value of run start
    server: dict[str, object] = field(default_factory=dict)  # engine telemetry (engine_metrics.py)

    def to_dict(self) -> dict[str, object]:
        return {
            "duration": self.duration,
            "started_at": self.started_at,
            "arrivals": dict(self.arrivals),
            "client_cpu_time": self.client_cpu_time,
            "client_health": [asdict(h) for h in self.health],
            "endpoint": self.endpoint,
            "clock": "perf_counter (CLOCK_MONOTONIC)",
            "clock_start": self.clock_start,
            "server": self.server,
            "records": [r.to_dict() for r in self.records],
        }

    @property
    def saturation(self) -> list[str]:
        """Why the client could not keep up, per load process; empty when it could."""
        return [f"load process {i}: {reason}" if len(self.health) > 1 else reason
                for i, h in enumerate(self.health) for reason in h.problems()]


# A Python client is one core at most: above this share of it, its timestamps
# trail the bytes. Runs shorter than the window are too short to judge CPU.
SATURATED_CPU = 0.90
CPU_WINDOW = 0.5
# Requests leaving this much behind schedule (median) mean the loop cannot keep up.
# Ordinary runs next to the engine on the 2-core CPU host left up to 14 ms late
# (median) when the engine decoded without pause; a client starved of its own
# CPU leaves 30 ms and more late.
LATE_DISPATCH_S = 0.025
# Event-loop wake-ups this late (p99) blur timestamps by as much; noted (not
# disqualifying: a busy engine on shared cores causes it too), and only over
# enough ticks (about a second) that one GC pause is not the p99.
LATE_WAKEUP_S = 0.050
MIN_WAKEUPS = 200
_TICK = 0.005


@dataclass
class ClientHealth:
    """One load process's view of itself during a run."""

    cpu_seconds: float
    wall_seconds: float
    peak_cpu_share: float  # busiest CPU_WINDOW of the run, share of one core
    dispatch_lag_median_s: float | None  # None for a burst (rate inf): no schedule
    dispatch_lag_p99_s: float | None
    wakeup_lag_p99_s: float
    wakeups: int = 0  # ticks sampled

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def problems(self) -> list[str]:
        out = []
        if self.wall_seconds >= CPU_WINDOW and self.cpu_share >= SATURATED_CPU:
            out.append(f"client saturated: its process used {self.cpu_share:.0%} of a core "
                       f"over the run (limit {SATURATED_CPU:.0%}); spread the load over more "
                       "processes or lower the rate")
        # A burst (rate inf) has no schedule to keep: its sends are as fast as possible.
        if self.dispatch_lag_median_s is not None and \
                self.dispatch_lag_median_s > LATE_DISPATCH_S:
            out.append(f"client fell behind its schedule: requests left a median "
                       f"{self.dispatch_lag_median_s * 1000:.1f} ms late "
                       f"(limit {LATE_DISPATCH_S * 1000:g} ms)")
        return out

    def notes(self) -> list[str]:
        """Recorded, not disqualifying: on the 2-core CPU host the engine's own
        threads delay the client's wake-ups by 60-110 ms at p99 in ordinary runs."""
        if self.wakeups >= MIN_WAKEUPS and self.wakeup_lag_p99_s > LATE_WAKEUP_S:
            return [f"client event loop woke p99 {self.wakeup_lag_p99_s * 1000:.1f} ms late "
                    f"(over {LATE_WAKEUP_S * 1000:g} ms): timestamps may trail arrivals"]
        return []


class _Watch:
    """Samples the loop's wake-up lag and the process's CPU while a run is in flight."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        window_cpu, window_wall = time.process_time(), perf_counter()
        while True:
            before = perf_counter()
            await asyncio.sleep(_TICK)
            now = perf_counter()
            self.lags.append(now - before - _TICK)
            if now - window_wall >= CPU_WINDOW:
                cpu = time.process_time()
                self.peak = max(self.peak, (cpu - window_cpu) / (now - window_wall))
                window_cpu, window_wall = cpu, now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class HTTPStatusError(Exception):
    """The server answered with a non-200 status."""


class StreamError(Exception):
    """The server reported an error inside the event stream."""


def _describe_error(exc: BaseException, api_key: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and not isinstance(exc, HTTPStatusError | StreamError):
        text += f" (caused by {type(cause).__name__}: {cause})"
    # Belt and braces: an error body must never carry the key into reports.
    return text.replace(api_key, "***") if api_key else text


async def _send_one(
    client: aiohttp.ClientSession,
    *,
    url: str,
    headers: dict[str, str],
    model: str,
    request: PromptRequest,
    record: RequestRecord,
    semaphore: asyncio.Semaphore | None,
    run_start: float,
    request_timeout: float,
    api_key: str,
    scheduled: float,
    chat: bool,
) -> None:
    """Send one streaming request and fill `record`; never raises."""
    body: dict[str, object] = {
        "model": model,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if chat:
        body["messages"] = [{"role": "user", "content": request.prompt}]
        body["max_completion_tokens"] = request.output_len
    else:
        body["prompt"] = request.prompt
        body["max_tokens"] = request.output_len
    # Serialised before the clock starts: encoding is the client's cost, not the server's.
    data = json.dumps(body).encode()
    headers = {**headers, "Content-Type": "application/json"}
    arrival = perf_counter()
    record.dispatch_lag = max(0.0, arrival - scheduled)
    async with semaphore if semaphore is not None else contextlib.nullcontext():
        start = perf_counter()
        record.queue_time = start - arrival
        record.send_time = start - run_start
        times = record.chunk_times
        append = times.append
        usage = None
        try:
            async with asyncio.timeout(request_timeout), \
                    client.post(url, data=data, headers=headers) as resp:
                if resp.status != 200:
                    detail = (await resp.read())[:300].decode(errors="replace")
                    raise HTTPStatusError(f"HTTP {resp.status}: {detail}")
                # Whole reads, split here: one await per network read instead of
                # two per SSE event (readline) roughly doubled the client's ceiling.
                async for now, lines in _sse_lines(resp.content):
                    for raw in lines:
                        if not raw.startswith(b"data: "):
                            continue
                        payload = raw[6:].rstrip()
                        if payload == b"[DONE]":
                            break
                        if not chat and _TOKEN_CHUNK.search(payload, 0, _HEAD):
                            # A non-empty top-level choices list (JSON strings escape
                            # their quotes, so this cannot match inside text): a
                            # token event, counted without parsing the chunk.
                            append(now - start)
                            continue
                        event = json.loads(payload)
                        # Same branch as vllm bench serve: a choices chunk is a token event.
                        choices = event.get("choices")
                        if choices and (not chat or _has_content(choices[0])):
                            append(now - start)
                        elif choices:
                            continue  # chat: role-only or empty delta, not a token
                        elif event.get("usage") is not None:
                            usage = event["usage"]
                        elif "error" in event:
                            raise StreamError(str(event["error"])[:300])
        except TimeoutError:
            record.error = f"TimeoutError: no complete response within {request_timeout:g} s"
            return
        except Exception as exc:  # every failure is data for the record, not a crash
            record.error = _describe_error(exc, api_key)
            return
        if usage is not None:
            record.prompt_tokens = usage.get("prompt_tokens")
            record.completion_tokens = usage.get("completion_tokens")
        if not times:
            record.error = "NoChunks: stream ended without any choices chunk (no TTFT)"
            return
        record.ttft = times[0]
        record.latency = times[-1]


async def _sse_lines(content: aiohttp.StreamReader) -> AsyncIterator[tuple[float, list[bytes]]]:
    """(arrival time, complete lines) per network read; a last unterminated line at the end.

    The clock is read first: parsing must not sit between arrival and timestamp.
    """
    tail = b""
    async for chunk in content.iter_any():
        now = perf_counter()
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()  # an incomplete line waits for the next read
        yield now, lines
    if tail:
        yield perf_counter(), [tail]


def _has_content(choice: dict[str, object]) -> bool:
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False
    return bool(delta.get("content") or delta.get("reasoning_content")
                or delta.get("reasoning"))


async def run_load(
    *,
    base_url: str,
    api_key: str,
    model: str,
    requests: Sequence[PromptRequest],
    arrivals: Arrivals,
    seed: int,
    request_timeout: float = 600.0,
    endpoint: str = "completions",
    start_at: float | None = None,
    subset: Sequence[int] | None = None,
) -> LoadRun:
    """Send `requests` on the `arrivals` schedule and time every stream.

    `base_url` is the server root (e.g. http://127.0.0.1:8000); /v1 is added here.
    `endpoint` is "completions" or "chat". `start_at` (a perf_counter value) and
    `subset` (request indices) let several processes share one schedule: each
    sends its subset at start_at + offset, and records keep their global index.
    """
    if request_timeout <= 0:
        raise ValueError(f"run_load: request_timeout must be > 0 seconds, got {request_timeout}")
    if endpoint not in ENDPOINTS:
        raise ValueError(f"run_load: endpoint {endpoint!r} is not one of {sorted(ENDPOINTS)}")
    offsets = arrivals.offsets(len(requests), seed)
    chosen = list(range(len(requests))) if subset is None else list(subset)
    cap = arrivals.max_concurrency
    pool = max(1, min(cap, len(chosen)) if cap is not None else len(chosen))
    http_client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT),
        # SSE lines can be long (usage, logprobs): above the 64 KiB default that
        # cut vLLM's own client throughput at long context.
        read_bufsize=2**20,
    )
    url = base_url.rstrip("/") + ENDPOINTS[endpoint]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    semaphore = asyncio.Semaphore(cap) if cap is not None else None
    records = [
        RequestRecord(index=i, prompt_len=requests[i].prompt_len,
                      output_len=requests[i].output_len)
        for i in chosen
    ]
    watch = _Watch()
    try:
        # A burst opens its connections before the clock starts, as a long-lived
        # client holds them: TCP set-up of 1,000 streams at once is then not
        # inside their TTFTs (vllm bench serve connects inside them). Timed
        # schedules connect as they go: an idle pooled connection outlives the
        # server's keep-alive (uvicorn: 5 s) and races its close.
        if not any(offsets[i] > 0 for i in chosen):
            await _preconnect(http_client, base_url, headers, min(pool, _PRECONNECT_MAX))
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - perf_counter()))
        cpu_start = time.process_time()
        started_at = time.time()
        run_start = perf_counter() if start_at is None else start_at
        watch.start()
        tasks: list[asyncio.Task[None]] = []
        for record in records:
            scheduled = run_start + offsets[record.index]
            wait = scheduled - perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(
                asyncio.create_task(
                    _send_one(
                        http_client,
                        url=url,
                        headers=headers,
                        model=model,
                        request=requests[record.index],
                        record=record,
                        semaphore=semaphore,
                        run_start=run_start,
                        request_timeout=request_timeout,
                        api_key=api_key,
                        scheduled=scheduled,
                        chat=endpoint == "chat",
                    )
                )
            )
        await asyncio.gather(*tasks)
        duration = perf_counter() - run_start
        cpu_time = time.process_time() - cpu_start
    finally:
        await watch.stop()
        await http_client.close()
    lags = [r.dispatch_lag for r in records]
    timed = bool(lags) and any(o > 0 for o in offsets)
    health = ClientHealth(
        cpu_seconds=cpu_time, wall_seconds=duration, peak_cpu_share=watch.peak,
        dispatch_lag_median_s=float(np.median(lags)) if timed else None,
        dispatch_lag_p99_s=float(np.percentile(lags, 99)) if timed else None,
        wakeup_lag_p99_s=float(np.percentile(watch.lags, 99)) if watch.lags else 0.0,
        wakeups=len(watch.lags),
    )
    return LoadRun(
        records=records,
        duration=duration,
        started_at=started_at,
        arrivals=arrivals.describe(),
        client_cpu_time=cpu_time,
        health=[health],
        endpoint=endpoint,
        clock_start=run_start,
    )


_PRECONNECT_MAX = 2048


async def _preconnect(client: aiohttp.ClientSession, base_url: str, headers: dict[str, str],
                      n: int) -> None:
    """`n` concurrent GET /health, so `n` keep-alive connections wait in the pool."""
    url = base_url.rstrip("/") + "/health"

    async def one() -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(_CONNECT_TIMEOUT), client.get(url, headers=headers) as r:
                await r.read()

    await asyncio.gather(*(one() for _ in range(n)))


ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


def run_load_sync(
    *,
    base_url: str,
    api_key: str,
    model: str,
    requests: Sequence[PromptRequest],
    arrivals: Arrivals,
    seed: int,
    request_timeout: float = 600.0,
    endpoint: str = "completions",
    processes: int = 1,
) -> LoadRun:
    """Blocking wrapper around `run_load`; `processes` > 1 spreads it (run_load_spread)."""
    kwargs: dict[str, Any] = dict(base_url=base_url, api_key=api_key, model=model,
                                  requests=requests, arrivals=arrivals, seed=seed,
                                  request_timeout=request_timeout, endpoint=endpoint)
    if processes > 1:
        return run_load_spread(processes=processes, **kwargs)
    return asyncio.run(run_load(**kwargs))


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
    for i in range(processes):
        sub = list(range(i, n, processes))
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
