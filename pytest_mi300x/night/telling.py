"""What a night tells: the job summary (Markdown), an ``::error`` annotation on a confirmed
regression, ``status=...`` for the workflow's next steps, and the table of a host's nights.
Everything goes through the project's one redaction (results/files.py)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from pytest_mi300x.night.pipeline import NightRun
from pytest_mi300x.night.state import BuildRef, NightRecord
from pytest_mi300x.results.files import append_text

ICON = {"green": "green", "red": "RED", "undecided": "undecided", "infra": "infra"}


def _pct(value: object) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    return "none" if math.isinf(value) else f"{value:.1f}%"


def _change(value: object) -> str:
    return "-" if not isinstance(value, int | float) or math.isnan(value) else f"{value:+.1f}%"


def build_line(role: str, ref: BuildRef | None) -> str:
    if ref is None:
        return f"- {role}: none yet"
    digest = f", digest `{ref.digest}`" if ref.digest else ""
    return f"- {role}: `{ref.name}` (`{ref.spec}`{digest})"


def resolving(night: NightRecord) -> str:
    """How many tests could gate, and at what resolving power (their throughput family)."""
    powers = sorted(float(t["resolves_pct"]) for t in night.tests.values()
                    if t.get("can_gate") and isinstance(t.get("resolves_pct"), int | float)
                    and not math.isnan(t["resolves_pct"]))
    judged = [t for t in night.tests.values() if t.get("gate") != "adopted"]
    if not judged:
        return "no test judged"
    if not powers:
        return f"0 of {len(judged)} test(s) could gate"
    mid = powers[len(powers) // 2]
    return (f"{len(powers)} of {len(judged)} test(s) could gate, resolving {mid:.1f}% "
            f"(median; {powers[0]:.1f}% to {powers[-1]:.1f}%)")


def summary(run: NightRun) -> str:
    n = run.record
    starts = ", ".join(f"{k} {v}" for k, v in n.starts.items()) or "none"
    lines = [f"## Night on {n.host}: {ICON.get(n.status, n.status)} (exit {n.exit})", "",
             n.headline, "",
             build_line("tonight", n.tonight), build_line("reference (last green)", n.reference),
             f"- tests: {resolving(n)}",
             f"- server starts: {n.starts_used} ({starts})",
             f"- wall time: {n.wall_s / 60:.1f} min",
             *( [f"- false-alarm budget: one across {n.fleet_hosts} hosts"]
                if n.fleet_hosts > 1 else []),
             f"- night `{n.id}` (state: `pytest-mi300x night status`)", ""]
    if n.tests:
        lines += ["| test | gate | head to head | outcome | change | resolves | why |",
                  "|---|---|---|---|---|---|---|"]
        for test, t in sorted(n.tests.items()):
            lines.append(f"| `{test}` | {t.get('gate', '-')} | {t.get('head_to_head') or '-'} "
                         f"| **{t.get('outcome', '-')}** | {_change(t.get('change_pct'))} | "
                         f"{_pct(t.get('resolves_pct'))} | "
                         f"{str(t.get('why', '')).replace('|', '/')} |")
        lines.append("")
    if run.search is not None:
        lines += [f"**Culprit:** {run.search.line()}", ""]
    if drifted(n):
        lines += ["**Drift against the anchor** (a slow slide no night saw against its "
                  "rolling baseline):", "", *(f"- {x}" for x in drifted(n)), ""]
    if run.tables:
        lines += ["```", *run.tables, "```", ""]
    notes = [x for x in n.notes if x]
    if notes:
        lines += ["<details><summary>notes</summary>", "", *(f"- {x}" for x in notes), "",
                  "</details>", ""]
    return "\n".join(lines)


def error_lines(run: NightRun) -> list[str]:
    """``::error`` lines for the job log: one per confirmed regression."""
    n = run.record
    out = []
    for test, t in sorted(n.tests.items()):
        if t.get("outcome") != "red":
            continue
        culprit = f"; {run.search.line()}" if run.search is not None else ""
        message = (f"{test} on {n.host}: {t.get('why', '')} ({n.tonight.name} against "
                   f"{n.reference.name if n.reference else '-'}){culprit}")
        out.append(f"::error title={_property(f'performance regression on {n.host}')}::"
                   + _data(message))
    return out


def drifted(night: NightRecord) -> list[str]:
    """The night's drift lines that found a metric moved against its anchor."""
    return [x for x in night.notes if x.startswith("drift: ") and " against the anchor " in x]


def warning_lines(run: NightRun) -> list[str]:
    """``::warning`` lines for the job log: one per metric drifted against its anchor."""
    title = _property(f"drift on {run.record.host}")
    return [f"::warning title={title}::" + _data(x) for x in drifted(run.record)]


def _data(text: str) -> str:
    """A workflow command's message, escaped as the Actions toolkit does."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def write_outputs(status: str, summary_text: str, summary_file: str | None) -> None:
    """The summary appended to ``summary_file``; ``status=...`` to ``$GITHUB_OUTPUT``."""
    if summary_file:
        append_text(Path(summary_file), summary_text + "\n")
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        append_text(Path(output), f"status={status}\n")


def status_table(nights: list[NightRecord]) -> list[str]:
    """The host's nights, oldest first: date, build, status, tests gated and their
    resolving power, starts used, wall time."""
    header = ["date", "build", "status", "tests", "starts", "wall", "culprit"]
    rows = []
    for n in nights:
        status = n.status + (" (adopted)" if n.adopted else "")
        rows.append([n.started[:16].replace("T", " "), n.tonight.name, status, resolving(n),
                     str(n.starts_used), f"{n.wall_s / 60:.1f} min", n.culprit or "-"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, ["-" * w for w in widths], *rows]]


def markdown_table(nights: list[NightRecord]) -> list[str]:
    """The same as a Markdown table (the sweep's report)."""
    lines = ["| night | build | status | tests gated, resolving | starts | wall time | "
             "culprit |", "|---|---|---|---|---|---|---|"]
    for i, n in enumerate(nights, 1):
        status = n.status + (" (adopted, nothing judged)" if n.adopted else "")
        lines.append(f"| {i} | `{n.tonight.name}` | {status} | {resolving(n)} | "
                     f"{n.starts_used} | {n.wall_s / 60:.1f} min | {n.culprit or '-'} |")
    return lines
