"""Consecutive nights of `pytest-mi300x night` on this machine, each from a fresh clone, with
one state carried over: what a self-hosted runner sees over a week or two.

    python benchmarks/night_sweep.py --repo . --commit HEAD --builds sweep-builds.txt \\
        --arrivals 1,1,1,1,1,1,1,3,1,1,1 --out /tmp/sweep -- --budget-starts 10

Before night i the stream file (``OUT/stream-<host>.txt``) holds the first
``arrivals[0] + ... + arrivals[i]`` builds of ``--builds`` (the full ordered list, oldest
first, as `pytest-mi300x night --stream file:` reads it): an arrival of 3 is a runner that
was down for two nights. Each night clones ``--repo`` at ``--commit`` into a fresh folder,
makes its own venv there (``pip install -e .``), and runs ``pytest-mi300x night --state
OUT/state-<host> --stream file:...`` in it, with the arguments after ``--`` (night options
and the pytest selection). ``--host NAME`` (repeatable, with ``--hosts-file``) runs the
same nights for each host profile, each with its own state. At the end it prints, per host,
the table of nights from the state (build, status, tests gated and their resolving power,
starts used, wall time) as Markdown, and each night's exit code and time with the install.
``--from-night N`` continues a sweep cut short (nights before N are in the state already).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_mi300x.night.state import State  # noqa: E402
from pytest_mi300x.night.telling import markdown_table  # noqa: E402


def run(cmd: list[str], log: Path, cwd: Path | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        return subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd)


def build_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def one_night(args: argparse.Namespace, host: str, n: int, lines: list[str],
              extra: list[str]) -> str:
    out: Path = args.out
    stream = out / f"stream-{host}.txt"
    stream.write_text("".join(f"{line}\n" for line in lines))
    clone = out / "clones" / f"{host}-night-{n}"
    log = out / "logs" / f"{host}-night-{n}.log"
    if clone.exists():
        shutil.rmtree(clone)
    began = time.monotonic()
    for cmd in (["git", "clone", "-q", str(args.repo), str(clone)],
                ["git", "-C", str(clone), "checkout", "-q", args.commit],
                [sys.executable, "-m", "venv", str(clone / ".venv")],
                [str(clone / ".venv" / "bin" / "pip"), "install", "-q", "-e", str(clone)]):
        if run(cmd, log) != 0:
            return f"night {n} on {host}: setup failed ({cmd[:3]}); see {log}"
    installed = time.monotonic() - began
    cmd = [str(clone / ".venv" / "bin" / "pytest-mi300x"), "night", "--gpu-host", host,
           "--state", str(out / f"state-{host}"), "--stream", f"file:{stream}",
           "--summary", str(out / f"{host}-night-{n}.md")]
    if args.hosts_file:
        cmd += ["--hosts-file", str(Path(args.hosts_file).resolve())]
    rc = run([*cmd, *extra], log, cwd=clone)
    took = time.monotonic() - began
    if not args.keep_clones:
        shutil.rmtree(clone, ignore_errors=True)
    return (f"night {n} on {host} ({len(lines)} builds in the stream, newest "
            f"{lines[-1]!r}): exit {rc}, {took / 60:.1f} min ({installed / 60:.1f} of them "
            "the clone and its venv)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="repository to clone")
    parser.add_argument("--commit", default="HEAD", help="the commit each night runs")
    parser.add_argument("--builds", type=Path, required=True,
                        help="every build of the sweep, oldest first, one a line")
    parser.add_argument("--arrivals", default="",
                        help="builds arriving before each night, e.g. 1,1,1,3,1 (default: "
                             "one a night, as many nights as builds)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--host", action="append", default=[],
                        help="host profile (repeatable; default cpu), each its own state")
    parser.add_argument("--hosts-file", default=None)
    parser.add_argument("--keep-clones", action="store_true")
    parser.add_argument("--from-night", type=int, default=1,
                        help="continue a sweep cut short: nights before N are in the state "
                             "already (their arrivals still count); other night options "
                             "may differ from the first part's")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    lines = build_lines(args.builds)
    arrivals = [int(x) for x in args.arrivals.split(",")] if args.arrivals else \
        [1] * len(lines)
    if sum(arrivals) > len(lines) or min(arrivals, default=0) < 0:
        parser.error(f"--arrivals {args.arrivals}: {sum(arrivals)} builds arrive, "
                     f"{args.builds} holds {len(lines)}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.repo = args.repo.resolve()
    # The commit as the source repository names it (a worktree's HEAD is not the clone's).
    args.commit = subprocess.run(["git", "-C", str(args.repo), "rev-parse", args.commit],
                                 capture_output=True, text=True, check=True).stdout.strip()
    print(f"each night clones {args.repo} at {args.commit}", flush=True)
    said: list[str] = []
    for host in args.host or ["cpu"]:
        arrived = 0
        for n, count in enumerate(arrivals, 1):
            arrived += count
            if arrived == 0 or n < args.from_night:
                continue
            line = one_night(args, host, n, lines[:arrived], extra)
            said.append(line)
            print(line, flush=True)
    for host in args.host or ["cpu"]:
        nights = State(args.out / f"state-{host}").host(host).nights()
        print(f"\n### Nights on {host}\n")
        print("\n".join(markdown_table(nights)))
    print("\n" + "\n".join(said))
    return 0


if __name__ == "__main__":
    sys.exit(main())
