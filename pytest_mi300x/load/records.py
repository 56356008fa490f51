"""What the client saw: one record per request, and a load run's records with its frame."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_mi300x.load.health import ClientHealth


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
    server: int = 0  # which server instance took it (index into the result's servers)

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
