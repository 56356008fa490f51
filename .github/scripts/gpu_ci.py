"""What the GPU workflows decide, as a script they call (and the tests run here).

  suite   one nightly shard on a host: gated with --require-baseline once the host has
          baselines; a host with none yet runs ungated and its job summary says so, with
          how to make them, instead of every test failing for want of a baseline
  offer   after `pytest-mi300x baselines refresh` on a host: the job summary lists the
          baselines made and how to commit them (the workflow uploads them as an artifact)

Run from the repository root with the harness installed:
  python .github/scripts/gpu_ci.py suite --host mi300x-01 --shard 1/2 \\
      --vllm-build docker:rocm/vllm:latest --results results/mi300x-01-shard1
  python .github/scripts/gpu_ci.py offer --host mi300x-01 --vllm-build docker:rocm/vllm:latest
The job summary goes to $GITHUB_STEP_SUMMARY (or --summary FILE); --dry-run prints the
pytest command instead of running it.
"""

from __future__ import annotations

import argparse
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


def suite(args: argparse.Namespace) -> int:
    baselines = host_baselines(args.baselines_dir, args.host)
    gated = bool(baselines)
    write_summary(args.summary, gated_text(args.host, len(baselines)) if gated
                  else no_baselines_text(args.host, args.baselines_dir, args.vllm_build))
    cmd = suite_command(args, gated)
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
    for name in ("suite", "offer"):
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
    args = parser.parse_args(argv)
    return suite(args) if args.command == "suite" else offer(args)


if __name__ == "__main__":
    sys.exit(main())
