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
from pathlib import Path

from pytest_mi300x.engines.base import EngineKind, LaunchSpec
from pytest_mi300x.engines.flags import FlagSet, FlagValue, cli_name

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
    blob = repr((build, spec.model, spec.extra_args, sorted(spec.env.items())))
    label = f"as-{asked.name}-{asked.digest}" if as_given else spec.flag_set.launch_label
    return f"{engine_name}-{logical_model}-{label}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def confirmed(kind: EngineKind, asked: FlagSet, log_path: Path) -> dict[str, str] | None:
    """The settings ``asked`` gives that its server was started without, as the server
    reports running them; None when the report does not show every one of them at the
    value asked (the engine's defaults are not what ``kind`` says, or it reports none)."""
    kept = {k for k, _ in launched(kind, asked).flags}
    dropped = {cli_name(k): v for k, v in asked.flags if k not in kept}
    if not dropped:
        return {}
    try:
        with log_path.open("rb") as fh:
            text = fh.read(LOG_HEAD_BYTES).decode(errors="replace")
    except OSError:
        return None
    report = kind.resolved_config(text)
    shown = {name.replace("-", "_"): _printed(value) for name, value in dropped.items()}
    if any(report.get(key) != value for key, value in shown.items()):
        return None
    return shown


def _printed(value: FlagValue) -> str:
    return str(value)
