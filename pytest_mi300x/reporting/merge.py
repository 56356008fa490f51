"""Join the result folders of a fleet run (one per host and shard) into one folder and report.

Each source keeps its own sub-folder (the same test on two hosts is two results);
``summary.md`` lists every test of every source, for CI job summaries.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TextIO

from pytest_mi300x.results.metrics import HEADLINE
from pytest_mi300x.results.model import SCHEMA, read_folder

SUMMARY = "summary.md"


def merge_folders(out: Path, sources: list[Path], err: TextIO | None = None) -> int:
    """Copy every result of ``sources`` under ``out/<source name>/`` and write the summary."""
    err = err or sys.stderr
    skipped: list[str] = []
    found = {}
    for source in sources:
        results = read_folder(source, skipped) if source.is_dir() else []
        if not results:
            print(f"pytest-mi300x merge: {source} holds no {SCHEMA} results; give the "
                  "--results-dir folders of the runs to join", file=err)
            return 2
        found[source] = results
    for line in skipped:
        print(f"pytest-mi300x merge: {line}", file=err)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        print(f"pytest-mi300x merge: two sources share a folder name ({names}); name each "
              "run's --results-dir after its host and shard", file=err)
        return 2
    lines = ["# pytest-mi300x results", "",
             f"{sum(len(r) for r in found.values())} result(s) from {len(sources)} run(s).", "",
             "| run | host | test | engine build | "
             + " | ".join(label for _, label, _ in HEADLINE) + " | status | gate |",
             "|---|---|---|---|" + "---:|" * len(HEADLINE) + "---|---|"]
    for source, results in found.items():
        target = out / source.name
        target.mkdir(parents=True, exist_ok=True)
        for result in results:
            if result.path is not None:
                shutil.copy2(result.path, target / result.path.name)
            medians = result.medians
            cells = [fmt.format(medians[k]) if k in medians else "-" for k, _, fmt in HEADLINE]
            lines.append(f"| {source.name} | {result.host_name} | `{result.test}` | "
                         f"{result.build} | {' | '.join(cells)} | {result.status} | "
                         f"{result.gate_status} |")
    (out / SUMMARY).write_text("\n".join(lines) + "\n")
    print(f"merged {sum(len(r) for r in found.values())} result(s) into {out} "
          f"(summary: {out / SUMMARY})")
    return 0
