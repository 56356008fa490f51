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
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import aiohttp

from pytest_mi300x.load.health import Watch, health_of
from pytest_mi300x.load.records import LoadRun, RequestRecord
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest

# `"choices":[{` (compact or spaced) near the chunk's start: vLLM and TGI put
# choices before the text, so the first few hundred bytes decide.
_TOKEN_CHUNK = re.compile(rb'"choices"\s*:\s*\[\s*\{')
_HEAD = 512
# TGI's last chunk carries the last token and the usage together (vLLM sends usage in
# a chunk of its own); a usage object anywhere in a token chunk is read from it.
_USAGE = re.compile(rb'"usage"\s*:\s*\{')

# Connect and pool waits are bounded apart from the whole-request timeout, so a
# dead server fails fast instead of after request_timeout.
_CONNECT_TIMEOUT = 10.0
STALL_TIMEOUT_S = 60.0
"""No byte of a started stream for this long: the engine stalled (the request fails with
StallTimeout; a run with one is invalid and its server is replaced)."""
ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}

Progress = Callable[[int, int], None]
"""(requests done, requests in the run), called about twice a second."""


@dataclass(frozen=True)
class _Target:
    """Where and how every request of one run goes."""

    url: str
    headers: dict[str, str]
    model: str
    chat: bool
    api_key: str
    run_start: float
    request_timeout: float
    stall_timeout: float
    extra_body: Mapping[str, object] = field(default_factory=dict)


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


async def _send_one(client: aiohttp.ClientSession, target: _Target, request: PromptRequest,
                    record: RequestRecord, semaphore: asyncio.Semaphore | None,
                    scheduled: float) -> None:
    """Send one streaming request and fill `record`; never raises."""
    model, chat, api_key = target.model, target.chat, target.api_key
    url, run_start, request_timeout = target.url, target.run_start, target.request_timeout
    body: dict[str, object] = {
        "model": model,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        **target.extra_body,
    }
    if chat:
        body["messages"] = [{"role": "user", "content": request.prompt}]
        body["max_completion_tokens"] = request.output_len
    else:
        body["prompt"] = request.prompt
        body["max_tokens"] = request.output_len
    # Serialised before the clock starts: encoding is the client's cost, not the server's.
    data = json.dumps(body).encode()
    headers = {**target.headers, "Content-Type": "application/json"}
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
                        # SSE allows "data:" with or without a space: vLLM writes
                        # "data: {...}", TGI (axum) "data:{...}".
                        if not raw.startswith(b"data:"):
                            continue
                        payload = raw[5:].strip()
                        if payload == b"[DONE]":
                            break
                        if not chat and _TOKEN_CHUNK.search(payload, 0, _HEAD):
                            # A non-empty top-level choices list (JSON strings escape
                            # their quotes, so this cannot match inside text): a
                            # token event, counted without parsing the chunk.
                            append(now - start)
                            if b'"usage"' in payload and _USAGE.search(payload):
                                usage = json.loads(payload)["usage"]
                            continue
                        event = json.loads(payload)
                        # Same branch as vllm bench serve: a choices chunk is a token event.
                        choices = event.get("choices")
                        if event.get("usage") is not None:
                            usage = event["usage"]
                        if choices and (not chat or _has_content(choices[0])):
                            append(now - start)
                        elif choices:
                            continue  # chat: role-only or empty delta, not a token
                        elif "error" in event:
                            raise StreamError(str(event["error"])[:300])
        except aiohttp.SocketTimeoutError:
            record.error = (f"StallTimeout: the stream sent nothing for "
                            f"{target.stall_timeout:g} s (the engine stalled)")
            return
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
    base_url: str | Sequence[str],
    api_key: str,
    model: str,
    requests: Sequence[PromptRequest],
    arrivals: Arrivals,
    seed: int,
    request_timeout: float = 600.0,
    endpoint: str = "completions",
    start_at: float | None = None,
    subset: Sequence[int] | None = None,
    on_progress: Progress | None = None,
    stall_timeout: float = STALL_TIMEOUT_S,
    extra_body: Mapping[str, object] | None = None,
) -> LoadRun:
    """Send `requests` on the `arrivals` schedule and time every stream.

    `base_url` is the server root (e.g. http://127.0.0.1:8000); /v1 is added here.
    Several roots (instances of one server behind one workload): request i goes to
    root i % len, by its global index, so load processes agree on the split.
    `endpoint` is "completions" or "chat". `start_at` (a perf_counter value) and
    `subset` (request indices) let several processes share one schedule: each
    sends its subset at start_at + offset, and records keep their global index.
    `extra_body`: fields added to every request (the engine's prefix-cache salt).
    """
    if request_timeout <= 0:
        raise ValueError(f"run_load: request_timeout must be > 0 seconds, got {request_timeout}")
    if endpoint not in ENDPOINTS:
        raise ValueError(f"run_load: endpoint {endpoint!r} is not one of {sorted(ENDPOINTS)}")
    offsets = arrivals.schedule(requests, seed)
    roots = [base_url] if isinstance(base_url, str) else list(base_url)
    if not roots:
        raise ValueError("run_load: base_url names no server")
    chosen = list(range(len(requests))) if subset is None else list(subset)
    cap = arrivals.max_concurrency
    pool = max(1, min(cap, len(chosen)) if cap is not None else len(chosen))
    records = [RequestRecord(index=i, prompt_len=requests[i].prompt_len,
                             output_len=requests[i].output_len, server=i % len(roots))
               for i in chosen]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    watch = Watch(None if on_progress is None else
                  lambda: on_progress(sum(r.latency is not None or r.error is not None
                                          for r in records), len(records)))
    async with _client(pool, stall_timeout) as http_client:
        # A burst opens its connections before the clock starts, as a long-lived
        # client holds them: TCP set-up of 1,000 streams at once is then not
        # inside their TTFTs (vllm bench serve connects inside them). Timed
        # schedules connect as they go: an idle pooled connection outlives the
        # server's keep-alive (uvicorn: 5 s) and races its close.
        if not any(offsets[i] != 0 for i in chosen):
            for root in roots:
                await _preconnect(http_client, root, headers,
                                  min(pool // len(roots) + 1, _PRECONNECT_MAX))
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - perf_counter()))
        cpu_start = time.process_time()
        started_at = time.time()
        run_start = perf_counter() if start_at is None else start_at
        targets = [_Target(root.rstrip("/") + ENDPOINTS[endpoint], headers, model,
                           endpoint == "chat", api_key, run_start, request_timeout,
                           stall_timeout, dict(extra_body or {}))
                   for root in roots]
        watch.start()
        try:
            await _dispatch(http_client, targets, requests, records, offsets,
                            asyncio.Semaphore(cap) if cap is not None else None)
            duration = perf_counter() - run_start
            cpu_time = time.process_time() - cpu_start
        finally:
            await watch.stop()
    timed = bool(records) and any(o is None or o > 0 for o in offsets)
    health = health_of(watch, [r.dispatch_lag for r in records], timed, cpu_time, duration)
    return LoadRun(records=records, duration=duration, started_at=started_at,
                   arrivals=arrivals.describe(), client_cpu_time=cpu_time, health=[health],
                   endpoint=endpoint, clock_start=run_start)


@contextlib.asynccontextmanager
async def _client(pool: int, stall_timeout: float) -> AsyncIterator[aiohttp.ClientSession]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT,
                                      sock_read=stall_timeout),
        # SSE lines can be long (usage, logprobs): above the 64 KiB default that
        # cut vLLM's own client throughput at long context.
        read_bufsize=2**20,
    )
    try:
        yield session
    finally:
        await session.close()


async def _dispatch(client: aiohttp.ClientSession, targets: Sequence[_Target],
                    requests: Sequence[PromptRequest], records: list[RequestRecord],
                    offsets: Sequence[float | None],
                    semaphore: asyncio.Semaphore | None) -> None:
    """Start each request at its scheduled instant (at its record's server), then wait
    for all of them; a request that waits on another (a conversation's next turn) goes
    once that one completed."""
    tasks: list[asyncio.Task[None]] = []
    done = _completions_awaited(requests, records)
    by_index = {r.index: r for r in records}
    run_start = targets[0].run_start
    timed = sorted((r for r in records if offsets[r.index] is not None),
                   key=lambda r: offsets[r.index] or 0.0)
    for record in records:
        if offsets[record.index] is None:
            tasks.append(asyncio.create_task(_send_after(
                client, targets[record.server], requests[record.index], record, semaphore,
                by_index, done)))
    for record in timed:
        scheduled = run_start + (offsets[record.index] or 0.0)
        wait = scheduled - perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        send = _send_one(client, targets[record.server], requests[record.index], record,
                         semaphore, scheduled)
        event = done.get(record.index)
        tasks.append(asyncio.create_task(send if event is None else _signal(send, event)))
    await asyncio.gather(*tasks)


def _completions_awaited(requests: Sequence[PromptRequest], records: list[RequestRecord]
                         ) -> dict[int, asyncio.Event]:
    """An event per request another one waits for (empty without conversations)."""
    chosen = {r.index for r in records}
    waited = {after for i in chosen if (after := requests[i].after) is not None}
    missing = sorted(i for i in waited if i not in chosen)
    if missing:
        raise ValueError(f"run_load: requests wait on request(s) {missing[:3]} outside this "
                         "load process; keep a conversation's turns in one process")
    return {i: asyncio.Event() for i in waited}


async def _signal(send: Any, event: asyncio.Event) -> None:
    try:
        await send
    finally:
        event.set()


async def _send_after(client: aiohttp.ClientSession, target: _Target, request: PromptRequest,
                      record: RequestRecord, semaphore: asyncio.Semaphore | None,
                      by_index: dict[int, RequestRecord],
                      done: dict[int, asyncio.Event]) -> None:
    """A later turn: wait for the turn before it, its think time, then send (never raises)."""
    event = done.get(record.index)
    try:
        assert request.after is not None
        await done[request.after].wait()
        before = by_index[request.after]
        if not before.ok:
            record.error = f"NotSent: the turn before it (request {request.after}) failed"
            return
        if request.think_s > 0:
            await asyncio.sleep(request.think_s)
        await _send_one(client, target, request, record, semaphore, perf_counter())
    finally:
        if event is not None:
            event.set()


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
