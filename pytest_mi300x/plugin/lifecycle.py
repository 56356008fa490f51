"""What the hooks do at the session's edges: build the session from the options, check the
host before the first test, publish the results and the end-of-session tables, and turn
SIGTERM into an interrupt while the session runs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mi300x.hosts.profile import HostConfigError, HostProfile
from pytest_mi300x.hosts.toml import select_host
from pytest_mi300x.plugin import options
from pytest_mi300x.progress import Progress

if TYPE_CHECKING:
    from pytest_mi300x.judge.baselines import BaselineWriter
    from pytest_mi300x.plugin.summary import SummaryCollector
    from pytest_mi300x.session import PerfSession


def make_session(config: pytest.Config, run_id: str, progress: Progress) -> PerfSession:
    from pytest_mi300x.session import PerfSession

    resolved = options.resolve(config, run_id)
    try:
        host = select_host(resolved.gpu_host, resolved.hosts_file)
    except HostConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    results_dir = resolved.results_dir or options.default_results_dir(config.rootpath, run_id)
    return PerfSession(resolved, host, Path(results_dir), progress=progress)


def host_or_none(config: pytest.Config) -> HostProfile | None:
    """The host profile before pytest_configure (xdist asks then); a bad one is reported
    by pytest_configure, not here."""
    try:
        resolved = options.resolve(config, "probe")
        return select_host(resolved.gpu_host, resolved.hosts_file)
    except (HostConfigError, pytest.UsageError):
        return None


def header(perf_session: PerfSession) -> str:
    host, scale = perf_session.host, perf_session.host.scale
    size = ("full size" if (scale.prompts, scale.rate, scale.lengths) == (1.0, 1.0, 1.0)
            else f"x{scale.prompts} prompts, x{scale.rate} rate, x{scale.lengths} lengths")
    gpus = (f"{host.accelerator_count} x {host.accelerator}"
            + (f" {host.gfx}" if host.gfx else "")) if host.has_gpus else "CPU"
    line = f"pytest-mi300x: host {host.name} ({gpus}, {host.source}); workloads at {size}"
    endpoint = perf_session.settings.endpoint
    if endpoint:
        line += (f"; measuring the endpoint {endpoint} (baselines: "
                 f"{perf_session.gate.host}/)")
    return line


def check_host(perf_session: PerfSession, workers: int) -> None:
    """Before the first test: reap what killed sessions left running, and check that the
    host's GPUs answer (GPU hosts)."""
    from pytest_mi300x.servers.endpoint import EndpointError
    from pytest_mi300x.servers.records import RecordsError

    try:
        perf_session.reap()
        if perf_session.settings.endpoint:
            perf_session.endpoint()  # unreachable or unusable: say so before any test
        elif perf_session.host.has_gpus:
            perf_session.inventory()
    except (HostConfigError, RecordsError, EndpointError) as exc:
        raise pytest.UsageError(str(exc)) from None


def publish(perf_session: PerfSession, outcomes: Any) -> tuple[Path, Path] | None:
    from pytest_mi300x.reporting.report import publish as write
    from pytest_mi300x.results.history import HistoryError, HistoryStore

    settings = perf_session.settings
    try:
        return write(perf_session.results_dir, settings.run_id, outcomes,
                     HistoryStore(settings.history_file))
    except HistoryError as exc:
        raise pytest.UsageError(str(exc)) from None


def summary_sections(perf_session: PerfSession, collector: SummaryCollector,
                     reports: tuple[Path, Path] | None, writer: BaselineWriter | None
                     ) -> Iterator[tuple[str, list[str]]]:
    """The end-of-session sections: figures and outcomes, verdicts, files, baselines."""
    from pytest_mi300x.reporting.terminal import summary_table, verdict_table

    if not collector.outcomes and not collector.rows:
        return
    lines = summary_table(collector.outcomes, collector.rows)
    lines.append(f"results: {perf_session.results_dir}")
    if reports is not None:
        lines.append("reports: " + "  ".join(str(p) for p in reports))
    lines.append(f"history: {perf_session.settings.history_file}")
    yield "pytest-mi300x", lines
    verdicts = verdict_table(collector.rows)
    if verdicts:
        yield "pytest-mi300x verdicts", verdicts
    if writer is not None and writer.changes:
        yield "pytest-mi300x baselines written", list(writer.changes)


class SigtermAsInterrupt:
    """CI cancels with SIGTERM; raising KeyboardInterrupt instead lets the servers'
    teardown run rather than leaving engines behind. ``restore`` puts the old handler back."""

    def __init__(self) -> None:
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None
        self._installed = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.signal(signal.SIGTERM, self._interrupt)
        self._installed = True

    def restore(self) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
            self._installed = False

    @staticmethod
    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
