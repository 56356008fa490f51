"""One server for flag sets that launch the same server.

A flag set that only gives flags their engine default (``--kv-cache-dtype auto``,
``--enable-chunked-prefill`` on vLLM V1) launches what the set without them launches, and
two sets with the same flags launch the same command: their tests share one server (one
start instead of several). The server is started without the default-valued flags, and a
test whose set gave one is handed that server only once the server's own report of what it
runs with shows that value; otherwise its set gets a server of its own, as given. Results
and baselines stay per test and per flag set: the server records the set each test asked
for (RunningServer.asked).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_mi300x.engines.base import EngineKind, EngineUnsupported, LaunchSpec
from pytest_mi300x.engines.flags import FlagSet, FlagValue, cli_name

if TYPE_CHECKING:
    from pytest_mi300x.servers.pool import RunningServer

LOG_HEAD_BYTES = 1_000_000
"""The part of a server's log its start-up report is looked for in."""


def launched(kind: EngineKind, flag_set: FlagSet) -> FlagSet:
    """What a server for ``flag_set`` is started with: without its engine-default flags."""
    return flag_set.beyond(kind.resolved_defaults)


def server_key(engine_name: str, logical_model: str, spec: LaunchSpec, asked: FlagSet,
               as_given: bool, build: object) -> str:
    """The pool's key of the server ``spec`` launches: without the name of the set that
    asked for it, so sets launching the same server get the same key (``as_given``: the
    set's own server, named after it)."""
    # The env the server really gets: a set's env that the host already sets changes
    # nothing (case 5's "amd-env" arm on a host whose profile sets that env for every
    # server), so it shares that server rather than start an identical one.
    env = {**spec.env, **dict(spec.flag_set.env)}
    changes = tuple((k, v) for k, v in spec.flag_set.env if spec.env.get(k) != v)
    blob = repr((build, spec.model, spec.extra_args, sorted(env.items())))
    label = (f"as-{asked.name}-{asked.digest}" if as_given
             else replace(spec.flag_set, env=changes).launch_label)
    return f"{engine_name}-{logical_model}-{label}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def confirmed(kind: EngineKind, asked: FlagSet, log_path: Path) -> dict[str, str] | None:
    """The settings ``asked`` gives that its server was started without, as the server
    reports running them; None when the report does not show every one of them at the
    value asked (the engine's defaults are not what ``kind`` says, or it reports none)."""
    kept = {k for k, _ in launched(kind, asked).flags}
    dropped = {cli_name(k): v for k, v in asked.flags if k not in kept}
    if not dropped:
        return {}
    report = read_report(kind, log_path)
    shown = {name.replace("-", "_"): _printed(value) for name, value in dropped.items()}
    if any(report.get(key) != value for key, value in shown.items()):
        return None
    return shown


def _printed(value: FlagValue) -> str:
    return str(value)


class FlagsNotHonoured(EngineUnsupported):
    """A started server reports running an explicit flag otherwise than asked: the test
    skips (the build cannot run the case) with the engine's own report."""


def check_honoured(kind: EngineKind, asked: FlagSet, server: RunningServer) -> None:
    """Raise FlagsNotHonoured when ``server`` reports running a flag of ``asked`` otherwise."""
    wrong = unhonoured(kind, asked, server.process.log_path)
    if wrong:
        raise FlagsNotHonoured(
            f"{kind.name} {server.version} does not run flag set {asked.name!r} as asked: "
            f"its config line reports {'; '.join(wrong)}; this build forces the setting, so "
            "the case would measure the other one")


def read_report(kind: EngineKind, log_path: Path) -> Mapping[str, str]:
    """The settings a server reports running with (empty when its log says none)."""
    try:
        with log_path.open("rb") as fh:
            text = fh.read(LOG_HEAD_BYTES).decode(errors="replace")
    except OSError:
        return {}
    return kind.resolved_config(text)


def unhonoured(kind: EngineKind, asked: FlagSet, log_path: Path) -> list[str]:
    """The flags ``asked`` gives explicitly that the server reports running otherwise, as
    "enable_chunked_prefill=True (asked --no-enable-chunked-prefill)": a build that forces a
    setting back (vLLM V1 builds of the 0.8-0.10 era turned chunked prefill on whatever
    the flag said) would otherwise be measured and recorded as the setting asked. Only
    switches and whole numbers are compared: other values are printed in the engine's own
    spelling."""
    report = read_report(kind, log_path)
    wrong = []
    for key, value in asked.flags:
        if not isinstance(value, bool | int):
            continue
        setting = cli_name(key).replace("-", "_")
        if setting in report and report[setting] != _printed(value):
            given = FlagSet("x", ((key, value),)).to_argv()
            wrong.append(f"{setting}={report[setting]} (asked {' '.join(given)})")
    return wrong
