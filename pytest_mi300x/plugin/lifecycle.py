"""What the hooks do at the session's edges: build the session from the options, check the
host before the first test, publish the results and the end-of-session tables, and turn
SIGTERM into an interrupt while the session runs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mi300x.hosts.profile import HostConfigError, HostProfile
from pytest_mi300x.hosts.toml import select_host
from pytest_mi300x.plugin import options
from pytest_mi300x.progress import Progress

if TYPE_CHECKING:
    from pytest_mi300x.config import Settings
    from pytest_mi300x.judge.baselines import BaselineWriter
    from pytest_mi300x.plugin.summary import SummaryCollector
    from pytest_mi300x.reporting.report import Published
    from pytest_mi300x.session import PerfSession


def make_session(config: pytest.Config, run_id: str, progress: Progress) -> PerfSession:
    from pytest_mi300x.judge.steadiness import SteadinessError
    from pytest_mi300x.session import PerfSession

    resolved = options.resolve(config, run_id)
    try:
        host = select_host(resolved.gpu_host, resolved.hosts_file)
    except HostConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    check_engine_args(host, resolved)
    results_dir = resolved.results_dir or options.default_results_dir(
        options.project_root(config), run_id)
    try:
        return PerfSession(resolved, host, Path(results_dir), progress=progress)
    except SteadinessError as exc:
        raise pytest.UsageError(str(exc)) from None


def check_engine_args(host: HostProfile, settings: Settings) -> None:
    """Engine arguments go to every engine a session starts: none may set what the harness
    sets for any of them, nor carry a secret on the command line."""
    from pytest_mi300x.engines import served

    try:
        served.check_engine_args(host.engine_args,
                                 f"{host.source}: host {host.name!r} engine_args")
        served.check_engine_args(settings.engine_args,
                                 "--engine-arg (or the engine_args ini key)")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def warn_if_rootdir_widened(config: pytest.Config) -> None:
    """pytest takes a plugin option's existing-path value given as a separate argument
    (``--vllm-build /opt/venv``) for a test path when it picks its rootdir: the rootdir, and
    with it every test id (and the baselines they name), then moves."""
    args = [str(a) for a in config.invocation_params.args]
    ours = set(options.PATH_OPTIONS)
    given = [f"{a} {b}" for a, b in zip(args, args[1:], strict=False)
             if a in ours and Path(config.invocation_params.dir, b).exists()]
    if given:
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"{given[0]}: pytest takes the path for a test path when it picks its rootdir "
            f"({config.rootpath}), which changes test ids; write it with '=' "
            f"({given[0].replace(' ', '=', 1)})"), stacklevel=2)


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
    if perf_session.steadiness:
        line += "\n" + perf_session.steadiness
    return line


def check_host(perf_session: PerfSession, workers: int, asked: str = "") -> None:
    """Before the first test: reap what killed sessions left running, check that the host's
    GPUs answer and the host is as its profile requires (the doctor's host checks: GPU
    count and arch, partitions, NUMA balancing, power, identity, numbering; on the cpu host
    NUMA balancing only). ``asked``: how the workers were asked for."""
    from pytest_mi300x.doctor import HOST_CHECKS, run_checks
    from pytest_mi300x.servers.endpoint import EndpointError
    from pytest_mi300x.servers.records import RecordsError

    if not perf_session.host.has_gpus and workers > 1:
        raise pytest.UsageError(
            f"{asked or f'-n {workers}'} on host {perf_session.host.name!r}: {workers} "
            "engines would share this machine's cores and every figure of the run would be "
            "worthless; run the cpu host without -n or --tx (xdist parallelism is for GPU "
            "hosts)")
    try:
        perf_session.reap()
        if perf_session.settings.endpoint:
            perf_session.endpoint()  # unreachable or unusable: say so before any test
        elif perf_session.host.has_gpus:
            perf_session.inventory()
    except (HostConfigError, RecordsError, EndpointError) as exc:
        raise pytest.UsageError(str(exc)) from None
    host = perf_session.host
    # NUMA balancing on every host (its state is part of every result's comparability);
    # the GPU checks where there are GPUs.
    failed = [c.line for c in run_checks(host, only=HOST_CHECKS if host.has_gpus
                                         else ("numa_balancing",)) if c.failed]
    if failed:
        raise pytest.UsageError(f"host {host.name!r} ({host.source}) is not fit to measure "
                                f"on (pytest-mi300x doctor --gpu-host {host.name}): "
                                + " | ".join(failed))


def publish(perf_session: PerfSession, outcomes: Any) -> Published | None:
    from pytest_mi300x.reporting.report import publish as write
    from pytest_mi300x.results.history import HistoryStore

    settings = perf_session.settings
    return write(perf_session.results_dir, settings.run_id, outcomes,
                 HistoryStore(settings.history_file))


def summary_sections(perf_session: PerfSession, collector: SummaryCollector,
                     published: Published | None, writer: BaselineWriter | None
                     ) -> Iterator[tuple[str, list[str]]]:
    """The end-of-session sections: figures and outcomes, verdicts, files, baselines."""
    from pytest_mi300x.reporting.outcomes import count_kinds
    from pytest_mi300x.reporting.terminal import accuracy_notes, summary_table, verdict_table

    if not collector.outcomes and not collector.rows:
        return
    lines = summary_table(collector.outcomes, collector.rows)
    lines.extend(accuracy_notes(collector.rows))
    kinds = count_kinds(list(collector.outcomes.values()))
    if kinds:
        lines.append("failures by kind: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
                     + " (infra: the machine, not the build; only 'regression' is a slowdown)")
    lines.append(f"results: {perf_session.results_dir}")
    if published is not None and published.reports is not None:
        lines.append("reports: " + "  ".join(str(p) for p in published.reports))
    lines.append(f"history: {perf_session.settings.history_file}")
    if published is not None:
        lines.extend(published.problems)
        skipped = published.skipped
        if skipped:
            lines.append(f"history: {len(skipped)} line{'s' if len(skipped) > 1 else ''} "
                         f"skipped: " + "; ".join(map(str, skipped[:3]))
                         + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""))
    yield "pytest-mi300x", lines
    verdicts = verdict_table(collector.rows)
    if verdicts:
        yield "pytest-mi300x verdicts", verdicts
    if writer is not None and writer.changes:
        yield "pytest-mi300x baselines written", list(writer.changes)


class SigtermAsInterrupt:
    """CI cancels with SIGTERM and a closed terminal sends SIGHUP; raising KeyboardInterrupt
    instead lets the servers' teardown run rather than leaving engines behind (what SIGKILL
    leaves is reaped through the server records). ``restore`` puts the old handlers back."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._interrupt)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    @staticmethod
    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
def shorten(report: pytest.TestReport, exc: BaseException) -> None:
    """Bad input a user can fix (``one_line`` errors) reads as one line, not a traceback."""
    if getattr(exc, "one_line", False):
        report.longrepr = f"{type(exc).__name__}: {exc}"


def hide_secrets(report: pytest.TestReport) -> None:
    """A failed test's text (error, captured output, log tail) without secrets: junit XML
    and terminals show it."""
    from pytest_mi300x.results.redact import text

    shown = report.longreprtext
    if text(shown) != shown:
        report.longrepr = text(shown)
    report.sections = [(name, text(content)) for name, content in report.sections]
    report.user_properties = [(k, text(v) if isinstance(v, str) else v)
                              for k, v in report.user_properties]
