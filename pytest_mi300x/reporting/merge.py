"""Join the result folders of a fleet run (one per host) into one folder and report.

Each source keeps its own sub-folder (the same test on two hosts is two results);
``summary.md`` lists every test of every source, and the sources without any, for CI job
summaries.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TextIO

from pytest_mi300x.results.metrics import HEADLINE
from pytest_mi300x.results.model import SCHEMA, Result, read_folder

SUMMARY = "summary.md"


def result_folders(source: Path, skipped: list[str]) -> list[tuple[Path, list[Result]]]:
    """The run folders of ``source``: itself when it holds results, else every folder under
    it that does (a downloaded CI artifact holds ``.perf-results/<run-id>/`` folders)."""
    if not source.is_dir():
        return []
    own = read_folder(source, skipped)
    if own:
        return [(source, own)]
    found = []
    for folder in sorted(p for p in source.rglob("*") if p.is_dir()):
        results = read_folder(folder, skipped)
        if results:
            found.append((folder, results))
    return found


def merge_folders(out: Path, sources: list[Path], err: TextIO | None = None) -> int:
    """Copy every result of ``sources`` under ``out/<source name>/`` and write the summary.

    A source without results (a host whose night wrote none, a runner that was offline) is
    listed as such in the summary, not an error: a fleet's report says which hosts are
    missing. Two sources of one name are an error (exit 2): their results would mix."""
    err = err or sys.stderr
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        print(f"pytest-mi300x merge: two sources share a folder name ({names}); name each "
              "run's --results-dir after its host and shard", file=err)
        return 2
    skipped: list[str] = []
    found = {source: result_folders(source, skipped) for source in sources}
    for line in skipped:
        print(f"pytest-mi300x merge: {line}", file=err)
    empty = [s for s, folders in found.items() if not folders]
    for source in empty:
        why = "does not exist" if not source.exists() else f"holds no {SCHEMA} results"
        print(f"pytest-mi300x merge: {source} {why}; listed in the summary as without "
              "results", file=err)
    count = sum(len(r) for folders in found.values() for _, r in folders)
    lines = ["# pytest-mi300x results", "",
             f"{count} result(s) from {len(sources) - len(empty)} of {len(sources)} "
             "source(s).", "",
             "| run | host | test | engine build | "
             + " | ".join(label for _, label, _ in HEADLINE) + " | status | gate |",
             "|---|---|---|---|" + "---:|" * len(HEADLINE) + "---|---|"]
    for source, folders in found.items():
        for folder, results in folders:
            target = out / source.name / folder.relative_to(source)
            target.mkdir(parents=True, exist_ok=True)
            for result in results:
                if result.path is not None:
                    shutil.copy2(result.path, target / result.path.name)
                medians = result.medians
                cells = [fmt.format(medians[k]) if k in medians else "-"
                         for k, _, fmt in HEADLINE]
                lines.append(f"| {source.name} | {result.host_name} | `{result.test}` | "
                             f"{result.build} | {' | '.join(cells)} | {result.status} | "
                             f"{result.gate_status} |")
    if empty:
        lines += ["", "## Sources without results", "",
                  *(f"- {s.name}: " + ("no such folder (nothing was uploaded)"
                                       if not s.exists() else "no result files")
                    for s in empty)]
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).write_text("\n".join(lines) + "\n")
    print(f"merged {count} result(s) into {out} (summary: {out / SUMMARY})")
    return 0
