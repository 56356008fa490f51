"""pytest hooks of pytest-mi300x; the logic lives in the modules they call."""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_mi300x.hosts.profile import HostConfigError, HostProfile, select_host
from pytest_mi300x.judge.baselines import BASELINE_PROPERTY, BaselineWriter
from pytest_mi300x.load.measurer import SUMMARY_PROPERTY
from pytest_mi300x.plugin import fixtures, settings
from pytest_mi300x.plugin import scheduling as sharding
from pytest_mi300x.plugin.stash import (
    MEASURER_KEY,
    OUTCOMES_KEY,
    REPORTS_KEY,
    SERVER_KEY,
    SESSION_KEY,
    SUMMARIES_KEY,
    WRITER_KEY,
)
from pytest_mi300x.reporting.report import publish
from pytest_mi300x.reporting.terminal import SummaryCollector, summary_table, verdict_table
from pytest_mi300x.results.history import HistoryError, HistoryStore
from pytest_mi300x.session import PerfSession

RUN_ID_INPUT = "mi300x_run_id"


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mi300x: a performance test of pytest-mi300x")
    config.addinivalue_line(
        "markers", "perf_floor(**metric_pct): per-test floor tolerances in percent, "
        "e.g. perf_floor(median_ttft_ms=15)")
    config.addinivalue_line(
        "markers", "accelerator(*kinds): run only on hosts with one of these accelerators "
        "(e.g. accelerator('mi300x', 'mi325x')); elsewhere the test skips with the reason")
    workerinput = getattr(config, "workerinput", None)
    run_id = (workerinput or {}).get(RUN_ID_INPUT) or (
        time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3))
    resolved = settings.resolve(config, run_id)
    try:
        host = select_host(resolved.gpu_host, resolved.hosts_file)
    except HostConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    results_dir = resolved.results_dir or settings.default_results_dir(config.rootpath, run_id)
    config.stash[SESSION_KEY] = PerfSession(resolved, host, Path(results_dir),
                                            progress=_progress_printer(config))
    config.stash[SUMMARIES_KEY] = []
    config.stash[OUTCOMES_KEY] = {}
    config.pluginmanager.register(
        SummaryCollector(config.stash[SUMMARIES_KEY], config.stash[OUTCOMES_KEY]),
        "mi300x-summaries")
    config.pluginmanager.register(fixtures, "mi300x-fixtures")
    if workerinput is None:
        writer = BaselineWriter(config.stash[SESSION_KEY].gate.store,
                                add_server=resolved.add_baseline_server)
        config.stash[WRITER_KEY] = writer
        config.pluginmanager.register(writer, "mi300x-baseline-writer")
    if (workerinput is None and getattr(config.option, "dist", "no") == "load"
            and not any(a.startswith(("--dist", "-d")) for a in config.invocation_params.args)):
        # -n without --dist: one xdist group per flag set keeps each server on one worker.
        config.option.dist = "loadgroup"
    if threading.current_thread() is threading.main_thread():
        # CI cancels with SIGTERM; turning it into KeyboardInterrupt lets the
        # servers' teardown run instead of leaving engines behind.
        signal.signal(signal.SIGTERM, _interrupt)


def _progress_printer(config: pytest.Config) -> Callable[[str], None]:
    """Engine provisioning takes minutes: show its steps through pytest's capture."""
    capman = config.pluginmanager.getplugin("capturemanager")

    def emit(line: str) -> None:
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(f"[pytest-mi300x] {line}", file=sys.stderr, flush=True)

    return emit


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` on a GPU host: as many workers as default-sized servers fit at once."""
    host = _host_before_configure(config)
    return host.servers_at_once() if host is not None and host.has_gpus else None


def _host_before_configure(config: pytest.Config) -> HostProfile | None:
    # xdist asks before pytest_configure; a bad host is reported there, not here.
    try:
        resolved = settings.resolve(config, "probe")
        return select_host(resolved.gpu_host, resolved.hosts_file)
    except (HostConfigError, pytest.UsageError):
        return None


def pytest_report_header(config: pytest.Config) -> str | None:
    perf_session = config.stash.get(SESSION_KEY, None)
    if perf_session is None:
        return None
    host, scale = perf_session.host, perf_session.host.scale
    size = ("full size" if (scale.prompts, scale.rate, scale.lengths) == (1.0, 1.0, 1.0)
            else f"x{scale.prompts} prompts, x{scale.rate} rate, x{scale.lengths} lengths")
    gpus = (f"{host.accelerator_count} x {host.accelerator}"
            + (f" {host.gfx}" if host.gfx else "")) if host.has_gpus else "CPU"
    return f"pytest-mi300x: host {host.name} ({gpus}, {host.source}); workloads at {size}"


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    perf_session = config.stash.get(SESSION_KEY, None)
    if (perf_session is None or not perf_session.host.has_gpus
            or hasattr(config, "workerinput") or config.option.collectonly):
        return
    try:
        perf_session.inventory()
    except HostConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[RUN_ID_INPUT] = node.config.stash[SESSION_KEY].settings.run_id


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that share a flag set run back to back, so each server starts once;
    # under xdist (--dist loadgroup) they share one worker for the same reason.
    def flag_set_of(item: pytest.Item) -> str:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        return str(params.get("flag_set", ""))

    items.sort(key=flag_set_of)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(sharding.group_of(item)))
    perf_session = config.stash.get(SESSION_KEY, None)
    shard = perf_session.settings.shard if perf_session is not None else None
    if shard is not None:
        kept, dropped = sharding.split(items, *shard)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    if perf_session is not None and hasattr(config, "workerinput") and items:
        sharding.write_groups(perf_session.results_dir, items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    return sharding.make_group_scheduler(config, log, config.stash[SESSION_KEY].results_dir)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    measurer = item.stash.get(MEASURER_KEY, None)
    if call.when == "call" and measurer is not None and measurer.results:
        report.user_properties.append((SUMMARY_PROPERTY, json.dumps(measurer.summary())))
        # Plain name/value pairs for junit XML, on the item: junitxml writes the properties
        # of the teardown report, which copies the item's.
        item.user_properties.extend(measurer.junit_properties())
        for result in measurer.results:
            outcome = result.outcome
            if outcome is not None and outcome.baseline is not None \
                    and outcome.status == "baseline written":
                report.user_properties.append(
                    (BASELINE_PROPERTY, json.dumps(outcome.baseline.to_dict())))
    server = item.stash.get(SERVER_KEY, None)
    if report.failed and server is not None:
        report.sections.append(("mi300x server log tail", server.process.log_tail(60)))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    perf_session = config.stash.get(SESSION_KEY, None)
    if perf_session is None:
        return
    perf_session.close()
    if hasattr(config, "workerinput"):
        return
    perf_session.sweep()
    settings = perf_session.settings
    outcomes: dict[str, str] = config.stash[OUTCOMES_KEY]
    try:
        written = publish(perf_session.results_dir, settings.run_id, outcomes,
                          HistoryStore(settings.history_file))
    except HistoryError as exc:
        raise pytest.UsageError(str(exc)) from None
    if written is not None:
        config.stash[REPORTS_KEY] = written


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(SUMMARIES_KEY, [])
    if not rows or hasattr(config, "workerinput"):
        return
    terminalreporter.section("pytest-mi300x")
    for line in summary_table(rows):
        terminalreporter.write_line(line)
    perf_session = config.stash[SESSION_KEY]
    terminalreporter.write_line(f"results: {perf_session.results_dir}")
    verdicts = verdict_table(rows)
    if verdicts:
        terminalreporter.section("pytest-mi300x verdicts")
        for line in verdicts:
            terminalreporter.write_line(line)
    reports = config.stash.get(REPORTS_KEY, None)
    if reports is not None:
        terminalreporter.write_line("reports: " + "  ".join(str(p) for p in reports))
    terminalreporter.write_line(f"history: {perf_session.settings.history_file}")
    writer = config.stash.get(WRITER_KEY, None)
    if writer is not None and writer.changes:
        terminalreporter.section("pytest-mi300x baselines written")
        for line in writer.changes:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    perf_session = config.stash.get(SESSION_KEY, None)
    if perf_session is not None:
        perf_session.close()
        del config.stash[SESSION_KEY]
