"""What the GPU workflows decide, as a script they call (and the tests run here).

  suite   one nightly shard on a host: gated with --require-baseline once the host has
          baselines; a host with none yet runs ungated and its job summary says so, with
          how to make them, instead of every test failing for want of a baseline
  offer   after `pytest-mi300x baselines refresh` on a host: the job summary lists the
          baselines made and how to commit them (the workflow uploads them as an artifact)
  culprit after a red night on a host: for each shard's results with a gated regression,
          `pytest-mi300x culprit` confirms it against the last good build and bisects the
          builds between (its record kept on the runner, so a restarted job continues)

Run from the repository root with the harness installed:
  python .github/scripts/gpu_ci.py suite --host mi300x-01 --shard 1/2 \\
      --vllm-build docker:rocm/vllm:latest --results results/mi300x-01-shard1
  python .github/scripts/gpu_ci.py offer --host mi300x-01 --vllm-build docker:rocm/vllm:latest
The job summary goes to $GITHUB_STEP_SUMMARY (or --summary FILE); --dry-run prints the
pytest command instead of running it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

BASELINES_WORKFLOW = "baselines.yml"


def host_baselines(root: Path, host: str) -> list[Path]:
    """The host's stored baselines (baselines/<host>/<engine>/<model>/<test>.json)."""
    from pytest_mi300x.results.files import slug

    return sorted((root / slug(host)).glob("*/*/*.json"))


def suite_command(args: argparse.Namespace, gated: bool) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "suites/", "--gpu-host", args.host,
           f"--vllm-build={args.vllm_build}", "--shard", args.shard, "-n", "auto",
           f"--results-dir={args.results}", f"--junitxml={args.results}/junit.xml",
           f"--baselines-dir={args.baselines_dir}"]
    if args.tgi_build:
        cmd.append(f"--tgi-build={args.tgi_build}")
    if gated:
        # The night's build against the stored baselines, which a refresh made with
        # another build: comparable across builds, never across hardware or workload.
        cmd += ["--require-baseline", "--across-builds"]
    return cmd


def run_link() -> str:
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
    repo, run_id = os.environ.get("GITHUB_REPOSITORY"), os.environ.get("GITHUB_RUN_ID")
    return f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else "this run"


def no_baselines_text(host: str, baselines_dir: Path, vllm_build: str) -> str:
    repo = os.environ.get("GITHUB_REPOSITORY", "OWNER/REPO")
    return f"""## {host}: no baselines yet, so this run was not gated

`{baselines_dir}/{host}/` holds no baseline, so the suite ran **without**
`--require-baseline`: its figures are recorded (results artifact, history), but no
test was judged against a baseline, and none failed for want of one.

To give {host} its first baselines, run the **baselines** workflow on it
(Actions → baselines → Run workflow, host `{host}`), or from a shell:

```bash
gh workflow run {BASELINES_WORKFLOW} -R {repo} -f host={host} -f vllm_build={vllm_build}
```

It runs `pytest-mi300x baselines refresh` on {host} and uploads the baselines as the
artifact `baselines-{host}`, with the commands to commit them in its summary. Once they
are committed, the nightly gates {host} with `--require-baseline`.
"""


def gated_text(host: str, count: int) -> str:
    return (f"## {host}: gated against {count} stored baseline(s)\n\n"
            "The suite ran with `--require-baseline --across-builds`: a test without a "
            "baseline fails (refresh them with the baselines workflow).\n")


def offer_text(host: str, files: list[Path], baselines_dir: Path, vllm_build: str) -> str:
    folder = f"{baselines_dir}/{host}"
    if not files:
        return (f"## {host}: no baselines were made\n\n"
                f"`pytest-mi300x baselines refresh` wrote nothing under `{folder}/`; "
                "see the refresh step's log for the tests that failed or skipped.\n")
    listed = "\n".join(f"- `{p}`" for p in files[:50])
    more = f"\n- ... and {len(files) - 50} more" if len(files) > 50 else ""
    run_id = os.environ.get("GITHUB_RUN_ID", "RUN_ID")
    repo = os.environ.get("GITHUB_REPOSITORY", "OWNER/REPO")
    return f"""## {host}: {len(files)} baseline(s) made, ready to commit

Made by `pytest-mi300x baselines refresh` with `{vllm_build}` in {run_link()}, uploaded
as the artifact **`baselines-{host}`**. Nothing is committed until you do: check the
figures (`pytest-mi300x baselines show --baselines-dir {baselines_dir}`), then in a
checkout of this branch:

```bash
rm -rf {folder} && mkdir -p {folder}
gh run download {run_id} -R {repo} -n baselines-{host} -D {folder}
git add {folder}
git commit -m "baselines: {host} with {vllm_build}"
```

(or download the artifact from the run page and unzip it into `{folder}/`). Once they
are on the default branch, the nightly gates {host} with `--require-baseline`.

{listed}{more}
"""


def write_summary(path: str | None, text: str) -> None:
    print(text)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


def red_nights(results: Path) -> list[Path]:
    """Result folders under ``results`` (one per shard) with a test that failed on a gated
    regression."""
    from pytest_mi300x.results.model import read_folder

    folders = sorted({p.parent for p in results.rglob("*.json")})
    return [f for f in folders if any(r.gated("regression") for r in read_folder(f))]


def culprit_command(args: argparse.Namespace, night: Path) -> list[str]:
    # The record lives where a re-run of the job finds it again (the runner's own disk, not
    # the job's temp folder): one folder per workflow run and night folder.
    run = os.environ.get("GITHUB_RUN_ID") or hashlib.sha256(
        str(night.resolve()).encode()).hexdigest()[:8]
    out = Path(args.state) / f"culprit-{args.host}-{run}-{night.name}"
    cmd = [sys.executable, "-m", "pytest_mi300x.cli", "culprit", "--results", str(night),
           "--out", str(out), f"--baselines-dir={args.baselines_dir}",
           "--gpu-host", args.host]
    if args.builds:
        cmd += ["--builds", args.builds]
    if args.commit_template:
        cmd += ["--commit-template", args.commit_template]
    return cmd


def culprit(args: argparse.Namespace) -> int:
    if args.state is None:
        from pytest_mi300x.engines.cache import default_cache_dir

        args.state = str(default_cache_dir() / "culprit")
    nights = red_nights(Path(args.results))
    if not nights:
        write_summary(args.summary, f"## {args.host}: no gated regression to search\n")
        return 0
    worst = 0
    for night in nights:
        cmd = culprit_command(args, night)
        print("running:", shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        rc = subprocess.call(cmd)  # it appends its own job summary
        worst = max(worst, 0 if rc == 1 else rc)  # 1: found, which is this job's success
    return worst


def steadiness_command(args: argparse.Namespace) -> list[str]:
    """Today's steadiness of this runner, before anything is judged: a few starts of the
    probe test against its record (pytest-mi300x steadiness)."""
    return [sys.executable, "-m", "pytest_mi300x.cli", "steadiness", "--starts",
            str(args.steadiness_starts), "--build", args.vllm_build, "--out",
            f"{args.results}/steadiness", f"--baselines-dir={args.baselines_dir}",
            "--gpu-host", args.host]


def suite(args: argparse.Namespace) -> int:
    baselines = host_baselines(args.baselines_dir, args.host)
    gated = bool(baselines)
    write_summary(args.summary, gated_text(args.host, len(baselines)) if gated
                  else no_baselines_text(args.host, args.baselines_dir, args.vllm_build))
    cmd = suite_command(args, gated)
    check = Path(args.results) / "steadiness" / "steadiness.json"
    if gated and args.steadiness_starts:
        probe = steadiness_command(args)
        print("running:", shlex.join(probe), flush=True)
        if not args.dry_run and subprocess.call(probe) == 0 and check.exists():
            summary = json.loads(check.read_text()).get("summary", "")
            write_summary(args.summary, f"{summary}\n")
            cmd.append(f"--steadiness={check}")
    print("running:", shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd)


def offer(args: argparse.Namespace) -> int:
    files = host_baselines(args.baselines_dir, args.host)
    write_summary(args.summary, offer_text(args.host, files, args.baselines_dir,
                                           args.vllm_build))
    return 0 if files else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_ci.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("suite", "offer", "culprit"):
        p = sub.add_parser(name)
        p.add_argument("--host", required=True, help="host profile (hosts.toml)")
        p.add_argument("--vllm-build", required=True)
        p.add_argument("--baselines-dir", type=Path, default=Path("baselines"))
        p.add_argument("--summary", default=os.environ.get("GITHUB_STEP_SUMMARY"),
                       help="job summary file (default: $GITHUB_STEP_SUMMARY)")
    run = sub.choices["suite"]
    run.add_argument("--shard", default="1/1", help="i/n")
    run.add_argument("--tgi-build", default="")
    run.add_argument("--results", required=True, help="results folder of this shard")
    run.add_argument("--dry-run", action="store_true", help="print the pytest command only")
    run.add_argument("--steadiness-starts", type=int, default=3,
                     help="starts of the steadiness check before a gated night (0: none)")
    search = sub.choices["culprit"]
    search.add_argument("--results", required=True,
                        help="the night's results (every shard's folder under it)")
    search.add_argument("--builds", default="",
                        help="builds in order, oldest first (default: the last good and the "
                             "failing build only)")
    search.add_argument("--commit-template", default="")
    search.add_argument("--state", default=None,
                        help="where the search's record is kept between job restarts "
                             "(default: the engine cache's culprit/ folder on this runner)")
    search.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    return {"suite": suite, "offer": offer, "culprit": culprit}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
