"""Where the suite's time goes: one `pytest suites/` run, split into engine install, server
starts and measured load, from pytest's own per-phase durations.

    python benchmarks/suite_time.py [pytest args...]      (default: suites/)

A test's setup holds its server's start (the first test of each flag set; later tests reuse
it) and, for the very first test, the engine install and the tiny model; its call holds the
warm-up and the measured runs. Prints the split and the slowest phases.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import defaultdict

from pytest_mi300x.engines.cache import default_cache_dir
from pytest_mi300x.engines.provision import MARKER

LINE = re.compile(r"^(\d+\.\d+)s (setup|call|teardown)\s+(\S+)")


def main(argv: list[str]) -> int:
    args = argv or ["suites/"]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, "--durations=0", "-q",
                           "-p", "no:cacheprovider"], capture_output=True, text=True)
    wall = time.monotonic() - started
    phases: dict[str, float] = defaultdict(float)
    rows = []
    for line in proc.stdout.splitlines():
        match = LINE.match(line)
        if match:
            seconds, phase, test = float(match.group(1)), match.group(2), match.group(3)
            phases[phase] += seconds
            rows.append((seconds, phase, test))
    summary = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    print(f"pytest exit {proc.returncode}; {summary[-1] if summary else 'no summary line'}")
    print(f"wall {wall / 60:.1f} min: setup (server starts, engine install) "
          f"{phases['setup'] / 60:.1f} min, call (warm-ups and measured runs) "
          f"{phases['call'] / 60:.1f} min, teardown {phases['teardown'] / 60:.1f} min, "
          f"other (collection, reports) {(wall - sum(phases.values())) / 60:.1f} min")
    # Engine venvs this run installed (their marker is newer than the run's start).
    installed = [json.loads(m.read_text()) for m in
                 (default_cache_dir() / "engines").glob(f"*/{MARKER}")
                 if m.stat().st_mtime >= time.time() - wall]
    install_s = sum(float(m.get("seconds", 0.0)) for m in installed)
    print(f"engine install {install_s:.0f} s ({len(installed)} build(s)); after it "
          f"{(wall - install_s) / 60:.1f} min")
    starts = [r for r in rows if r[1] == "setup" and r[0] > 5]
    print(f"{len(starts)} setups over 5 s (server starts): median "
          f"{sorted(r[0] for r in starts)[len(starts) // 2] if starts else 0:.0f} s")
    print("slowest phases:")
    for seconds, phase, test in sorted(rows, reverse=True)[:8]:
        print(f"  {seconds:7.1f} s  {phase:<8} {test}")
    return 0 if proc.returncode in (0, 1) else proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
