"""Streaming load generator for /v1/completions, timed as `vllm bench serve` times it.

The hot path speaks SSE over aiohttp, as vllm bench serve's client does. The
alternatives measured worse on the CPU host (2 cores shared with the engine),
same server and prompts at 10 req/s: the openai client's per-chunk objects gave
about 6x the median TTFT and twice the client CPU; raw httpx2 sent requests a
median 195 ms behind schedule (median TTFT 820 ms) where aiohttp kept to 1 ms
(median TTFT 19.5 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from time import perf_counter

import aiohttp

from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest

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

    def to_dict(self) -> dict[str, object]:
        return {
            "duration": self.duration,
            "started_at": self.started_at,
            "arrivals": dict(self.arrivals),
            "client_cpu_time": self.client_cpu_time,
            "records": [r.to_dict() for r in self.records],
        }


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
) -> None:
    """Send one streaming request and fill `record`; never raises."""
    body = {
        "model": model,
        "prompt": request.prompt,
        "max_tokens": request.output_len,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    arrival = perf_counter()
    async with semaphore if semaphore is not None else contextlib.nullcontext():
        start = perf_counter()
        record.queue_time = start - arrival
        record.send_time = start - run_start
        times = record.chunk_times
        append = times.append
        usage = None
        try:
            async with asyncio.timeout(request_timeout), \
                    client.post(url, json=body, headers=headers) as resp:
                if resp.status != 200:
                    detail = (await resp.read())[:300].decode(errors="replace")
                    raise HTTPStatusError(f"HTTP {resp.status}: {detail}")
                async for raw in resp.content:
                    # Timestamp first: parsing must not sit between arrival and clock.
                    now = perf_counter()
                    if not raw.startswith(b"data: "):
                        continue
                    payload = raw[6:].rstrip()
                    if payload == b"[DONE]":
                        break
                    event = json.loads(payload)
                    # Same branch as vllm bench serve: a choices chunk is a token event.
                    if event.get("choices"):
                        append(now - start)
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


async def run_load(
    *,
    base_url: str,
    api_key: str,
    model: str,
    requests: Sequence[PromptRequest],
    arrivals: Arrivals,
    seed: int,
    request_timeout: float = 600.0,
) -> LoadRun:
    """Send `requests` on the `arrivals` schedule and time every stream.

    `base_url` is the server root (e.g. http://127.0.0.1:8000); /v1 is added here.
    """
    if request_timeout <= 0:
        raise ValueError(f"run_load: request_timeout must be > 0 seconds, got {request_timeout}")
    offsets = arrivals.offsets(len(requests), seed)
    cap = arrivals.max_concurrency
    pool = max(1, min(cap, len(requests)) if cap is not None else len(requests))
    http_client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT),
        # SSE lines can be long (usage, logprobs): above the 64 KiB default that
        # cut vLLM's own client throughput at long context.
        read_bufsize=2**20,
    )
    url = base_url.rstrip("/") + "/v1/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    semaphore = asyncio.Semaphore(cap) if cap is not None else None
    records = [
        RequestRecord(index=i, prompt_len=r.prompt_len, output_len=r.output_len)
        for i, r in enumerate(requests)
    ]
    try:
        cpu_start = time.process_time()
        started_at = time.time()
        run_start = perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for request, record, offset in zip(requests, records, offsets, strict=True):
            wait = run_start + offset - perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(
                asyncio.create_task(
                    _send_one(
                        http_client,
                        url=url,
                        headers=headers,
                        model=model,
                        request=request,
                        record=record,
                        semaphore=semaphore,
                        run_start=run_start,
                        request_timeout=request_timeout,
                        api_key=api_key,
                    )
                )
            )
        await asyncio.gather(*tasks)
        duration = perf_counter() - run_start
        cpu_time = time.process_time() - cpu_start
    finally:
        await http_client.close()
    return LoadRun(
        records=records,
        duration=duration,
        started_at=started_at,
        arrivals=arrivals.describe(),
        client_cpu_time=cpu_time,
    )


def run_load_sync(
    *,
    base_url: str,
    api_key: str,
    model: str,
    requests: Sequence[PromptRequest],
    arrivals: Arrivals,
    seed: int,
    request_timeout: float = 600.0,
) -> LoadRun:
    """Blocking wrapper around `run_load` (creates its own event loop)."""
    return asyncio.run(
        run_load(
            base_url=base_url,
            api_key=api_key,
            model=model,
            requests=requests,
            arrivals=arrivals,
            seed=seed,
            request_timeout=request_timeout,
        )
    )
