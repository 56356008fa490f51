"""Join the result folders of a fleet run (one per host and shard) into one folder and report.

Each source keeps its own sub-folder (the same test on two hosts is two results);
``summary.md`` lists every test of every source, for CI job summaries.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from pytest_mi300x.results.files import SCHEMA, read_results

SUMMARY = "summary.md"
_FIGURES = ("request_throughput", "output_throughput", "median_ttft_ms", "mean_tpot_ms")


def _median_figures(doc: dict[str, Any]) -> dict[str, float]:
    runs = [r["figures"] for r in doc.get("runs", []) if not r.get("problems")]
    out = {}
    for key in _FIGURES:
        values = sorted(float(r[key]) for r in runs if r.get(key) is not None)
        if values:
            mid = len(values) // 2
            out[key] = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return out


def _gate(doc: dict[str, Any]) -> str:
    outcomes = [g.get("status", "?") for g in doc.get("gate", []) if isinstance(g, dict)]
    return ", ".join(outcomes) or "-"


def merge_folders(out: Path, sources: list[Path], err: TextIO = sys.stderr) -> int:
    """Copy every result of ``sources`` under ``out/<source name>/`` and write the summary."""
    for source in sources:
        if not source.is_dir() or not read_results(source):
            print(f"pytest-mi300x merge: {source} holds no {SCHEMA} results; give the "
                  "--results-dir folders of the runs to join", file=err)
            return 2
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        print(f"pytest-mi300x merge: two sources share a folder name ({names}); name each "
              "run's --results-dir after its host and shard", file=err)
        return 2
    rows = []
    for source in sources:
        target = out / source.name
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.glob("*.json")):
            shutil.copy2(path, target / path.name)
        for doc in read_results(source):
            host = doc.get("host", {}).get("name", "?")
            build = doc.get("engine", {}).get("build", "?")
            rows.append((source.name, host, doc["test"], build, _median_figures(doc),
                         doc.get("valid", False), _gate(doc)))
    lines = ["# pytest-mi300x results", "",
             f"{len(rows)} result(s) from {len(sources)} run(s).", "",
             "| run | host | test | engine build | req/s | out tok/s | median TTFT ms "
             "| mean TPOT ms | valid | gate |",
             "|---|---|---|---|---:|---:|---:|---:|---|---|"]
    for run, host, test, build, figs, valid, gate in rows:
        cells = [f"{figs[k]:.4g}" if k in figs else "-" for k in _FIGURES]
        lines.append(f"| {run} | {host} | `{test}` | {build} | {' | '.join(cells)} | "
                     f"{'yes' if valid else 'NO'} | {gate} |")
    (out / SUMMARY).write_text("\n".join(lines) + "\n")
    print(f"merged {len(rows)} result(s) into {out} (summary: {out / SUMMARY})")
    return 0
