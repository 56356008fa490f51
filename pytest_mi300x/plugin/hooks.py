"""pytest hooks of pytest-mi300x (the ``pytest11`` entry point); the logic lives in the
modules they call. What ``pytest_configure`` sets up, ``pytest_unconfigure`` takes down."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Generator
from typing import Any

import pytest

from pytest_mi300x.judge.baselines import BaselineWriter
from pytest_mi300x.plugin import fixtures, options, planning, scheduling
from pytest_mi300x.plugin.lifecycle import (
    SigtermAsInterrupt,
    check_host,
    header,
    hide_secrets,
    host_or_none,
    make_session,
    publish,
    shorten,
    summary_sections,
    warn_if_rootdir_widened,
)
from pytest_mi300x.plugin.progress import LiveProgress
from pytest_mi300x.plugin.stash import (
    COLLECTOR_KEY,
    MEASURER_KEY,
    PROGRESS_KEY,
    REPORTS_KEY,
    SERVER_KEY,
    SERVERS_KEY,
    SESSION_KEY,
    SIDE_MEASURERS_KEY,
    SIGNALS_KEY,
    WRITER_KEY,
)
from pytest_mi300x.plugin.summary import FAILURE_PROPERTY, SUMMARY_PROPERTY, SummaryCollector
from pytest_mi300x.reporting.outcomes import describe

RUN_ID_INPUT = "mi300x_run_id"
MARKERS = (
    "mi300x: a performance test of pytest-mi300x",
    "perf_floor(**metric_pct): per-test floor tolerances in percent, "
    "e.g. perf_floor(median_ttft_ms=15)",
    "accelerator(*kinds): run only on hosts with one of these accelerators "
    "(e.g. accelerator('mi300x', 'mi325x')); elsewhere the test skips with the reason",
    "tensor_parallel(n): on a GPU host, the test's servers run at tensor parallel n (the "
    "seed's TP for the case) unless its flag set gives tensor_parallel_size; a CPU host "
    "ignores it",
    "seed_claim(flag_set=None, sides=()): checks a claim of the seed guide on what other "
    "tests measured in this session (claim_sides fixture); runs after them, or, with flag_set "
    "(its own workloads on that flag set), with that flag set's tests; sides (flag sets, or "
    "(engine, flag set)) keeps it on the xdist worker of those sides' tests",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_cmdline_main(config: pytest.Config) -> None:
    planning.run_nothing_in_parallel(config)  # after xdist's (tryfirst) read -n


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    workerinput = getattr(config, "workerinput", None)
    run_id = (workerinput or {}).get(RUN_ID_INPUT) or (
        time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3))
    warn_if_rootdir_widened(config)
    progress = LiveProgress(config)
    config.stash[PROGRESS_KEY] = progress
    config.stash[SESSION_KEY] = make_session(config, run_id, progress)
    collector = SummaryCollector()
    config.stash[COLLECTOR_KEY] = collector
    config.pluginmanager.register(collector, "mi300x-summaries")
    config.pluginmanager.register(fixtures, "mi300x-fixtures")
    config.pluginmanager.register(progress, "mi300x-progress")
    if workerinput is None:
        writer = BaselineWriter(config.stash[SESSION_KEY].gate.store,
                                add_server=config.stash[SESSION_KEY].settings.add_baseline_server)
        config.stash[WRITER_KEY] = writer
        config.pluginmanager.register(writer, "mi300x-baseline-writer")
        scheduling.default_to_server_groups(config)
    signals = SigtermAsInterrupt()
    signals.install()
    config.stash[SIGNALS_KEY] = signals


def pytest_unconfigure(config: pytest.Config) -> None:
    perf_session = config.stash.get(SESSION_KEY, None)
    if perf_session is not None:
        perf_session.close()
        del config.stash[SESSION_KEY]
    for name in ("mi300x-summaries", "mi300x-fixtures", "mi300x-progress",
                 "mi300x-baseline-writer"):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin, name)
    signals = config.stash.get(SIGNALS_KEY, None)
    if signals is not None:
        signals.restore()
        del config.stash[SIGNALS_KEY]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` on a GPU host: as many workers as default-sized servers fit at once."""
    host = host_or_none(config)
    return host.servers_at_once() if host is not None and host.has_gpus else None


def pytest_report_header(config: pytest.Config) -> str | None:
    perf_session = config.stash.get(SESSION_KEY, None)
    return header(perf_session) if perf_session is not None else None


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    perf_session = config.stash.get(SESSION_KEY, None)
    if (perf_session is None or hasattr(config, "workerinput") or config.option.collectonly
            or perf_session.settings.plan):
        return
    check_host(perf_session, workers=scheduling.worker_count(config),
               asked=scheduling.workers_asked(config))


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """``--mi300x-plan``: the plan instead of the tests."""
    perf_session = session.config.stash.get(SESSION_KEY, None)
    if perf_session is None or not perf_session.settings.plan:
        return None
    planning.show(session.config, perf_session, session.items)
    return True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[RUN_ID_INPUT] = node.config.stash[SESSION_KEY].settings.run_id


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    perf_session = config.stash.get(SESSION_KEY, None)
    if perf_session is not None:
        perf_session.share_budget(scheduling.gated_tests(items))
    scheduling.order_and_group(config, items, perf_session)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    return scheduling.make_group_scheduler(config, log, config.stash[SESSION_KEY].results_dir)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    measurer = item.stash.get(MEASURER_KEY, None)
    if call.when == "call" and measurer is not None and measurer.results:
        if report.passed and measurer.cannot_gate():
            # Neither a silent pass nor a false failure: it says what it could not judge.
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0,
                               f"Skipped: cannot gate: {measurer.cannot_gate()}")
        report.user_properties.append((SUMMARY_PROPERTY, json.dumps(measurer.summary())))
        # Plain name/value pairs for junit XML, on the item: junitxml writes the properties
        # of the teardown report, which copies the item's.
        item.user_properties.extend(measurer.junit_properties())
        report.user_properties.extend(measurer.baseline_properties())
    if call.when == "call":
        for side in item.stash.get(SIDE_MEASURERS_KEY, []):
            report.user_properties.extend(side.baseline_properties())
    if report.failed and call.excinfo is not None:
        shorten(report, call.excinfo.value)
        kind, cause = describe(call.excinfo.value)
        report.user_properties.append(
            (FAILURE_PROPERTY, json.dumps({"kind": kind.value, "cause": cause})))
        item.user_properties.append(("mi300x.failure", kind.value))
    server = item.stash.get(SERVER_KEY, None)
    if report.failed and server is not None:
        servers = item.stash.get(SERVERS_KEY, None) or [server]
        for i, each in enumerate(servers):
            name = "mi300x server log tail" + (f" (instance {i + 1})" if len(servers) > 1 else "")
            report.sections.append((name, each.process.log_tail(60)))
    if report.failed:
        hide_secrets(report)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    perf_session = config.stash.get(SESSION_KEY, None)
    if perf_session is None or perf_session.settings.plan:
        return
    perf_session.close()
    if hasattr(config, "workerinput"):
        return
    perf_session.sweep()
    written = publish(perf_session, config.stash[COLLECTOR_KEY].outcomes)
    if written is not None:
        config.stash[REPORTS_KEY] = written


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    perf_session = config.stash.get(SESSION_KEY, None)
    collector = config.stash.get(COLLECTOR_KEY, None)
    if perf_session is None or collector is None or hasattr(config, "workerinput"):
        return
    for title, lines in summary_sections(perf_session, collector,
                                         config.stash.get(REPORTS_KEY, None),
                                         config.stash.get(WRITER_KEY, None)):
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
