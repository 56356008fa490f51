"""The GPU workflows' decisions (.github/scripts/gpu_ci.py): the nightly gates a host only
once it has baselines, says so in its job summary when it has none, and the baselines
workflow offers a refresh's baselines for commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pytest_mi300x.judge.baselines import Baseline, BaselineStore

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / ".github" / "scripts" / "gpu_ci.py"
WORKFLOWS = ROOT / ".github" / "workflows"


def gpu_ci(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    summary = tmp_path / "summary.md"
    summary.unlink(missing_ok=True)
    env = {"PATH": "/usr/bin:/bin", "GITHUB_REPOSITORY": "amd/pytest-mi300x",
           "GITHUB_RUN_ID": "4242", "GITHUB_SERVER_URL": "https://github.com"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--summary", str(summary),
                           "--baselines-dir", str(tmp_path / "baselines")],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    return proc, summary.read_text() if summary.exists() else ""


def store(tmp_path: Path, host: str, test: str = "suites/test_headline.py::t[x]") -> Path:
    return BaselineStore(tmp_path / "baselines").save(Baseline(
        test=test, host=host, engine="vllm", model="llama-3.1-70b",
        repetitions=[{"request_throughput": 10.0}], comparability={}))


def suite(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    return gpu_ci(tmp_path, "suite", "--host", "mi300x-01", "--shard", "1/2",
                  "--vllm-build", "docker:rocm/vllm:latest", "--results", "results/s1",
                  "--dry-run")


def command(proc: subprocess.CompletedProcess[str]) -> str:
    """The suite's command: the last one run (a gated night checks its steadiness first)."""
    return [line for line in proc.stdout.splitlines() if line.startswith("running: ")][-1]


def test_a_host_without_baselines_runs_ungated_and_the_summary_says_what_to_do(
        tmp_path: Path) -> None:
    store(tmp_path, "another-host")  # someone else's baselines do not count
    proc, summary = suite(tmp_path)
    assert proc.returncode == 0, proc.stderr
    cmd = command(proc)
    assert "--require-baseline" not in cmd and "--across-builds" not in cmd
    for part in ("-m pytest suites/ --gpu-host mi300x-01", "--shard 1/2", "-n auto",
                 "--vllm-build=docker:rocm/vllm:latest", "--results-dir=results/s1"):
        assert part in cmd, part
    assert summary.startswith("## mi300x-01: no baselines yet, so this run was not gated")
    assert "none failed for want of one" in summary
    assert ("gh workflow run baselines.yml -R amd/pytest-mi300x -f host=mi300x-01 "
            "-f vllm_build=docker:rocm/vllm:latest") in summary


def test_a_host_with_baselines_is_gated(tmp_path: Path) -> None:
    store(tmp_path, "mi300x-01")
    proc, summary = suite(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert command(proc).endswith("--require-baseline --across-builds")
    assert summary.startswith("## mi300x-01: gated against 1 stored baseline(s)")
    [check] = [x for x in proc.stdout.splitlines() if " steadiness " in x]
    assert "--starts 3 --build docker:rocm/vllm:latest --out results/s1/steadiness" in check
    assert "--gpu-host mi300x-01" in check


def test_offer_lists_the_baselines_and_how_to_commit_them(tmp_path: Path) -> None:
    proc, summary = gpu_ci(tmp_path, "offer", "--host", "mi300x-01",
                           "--vllm-build", "docker:rocm/vllm:7.0")
    assert proc.returncode == 1
    assert "## mi300x-01: no baselines were made" in summary
    path = store(tmp_path, "mi300x-01")
    proc, summary = gpu_ci(tmp_path, "offer", "--host", "mi300x-01",
                           "--vllm-build", "docker:rocm/vllm:7.0")
    assert proc.returncode == 0
    folder = f"{tmp_path / 'baselines'}/mi300x-01"
    assert summary.startswith("## mi300x-01: 1 baseline(s) made, ready to commit")
    assert "https://github.com/amd/pytest-mi300x/actions/runs/4242" in summary
    assert (f"gh run download 4242 -R amd/pytest-mi300x -n baselines-mi300x-01 -D {folder}"
            in summary)
    assert 'git commit -m "baselines: mi300x-01 with docker:rocm/vllm:7.0"' in summary
    assert f"- `{path}`" in summary


def test_the_workflows_call_the_script_and_agree_on_the_artifact() -> None:
    nightly = (WORKFLOWS / "nightly.yml").read_text()
    assert ".venv/bin/python .github/scripts/gpu_ci.py" in nightly
    commands = [line for line in nightly.splitlines() if not line.strip().startswith("#")]
    assert not [line for line in commands if "--require-baseline" in line]  # the script's call
    baselines = (WORKFLOWS / "baselines.yml").read_text()
    assert "workflow_dispatch:" in baselines
    assert "pytest-mi300x baselines refresh" in baselines
    assert "gpu_ci.py offer" in baselines
    # What the offer tells users to download is what the workflow uploads.
    assert "name: baselines-${{ inputs.host }}" in baselines
    assert "path: baselines/${{ inputs.host }}/" in baselines


def test_the_script_reads_the_same_folders_the_store_writes(tmp_path: Path) -> None:
    host = "mi300x-01"
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_ci  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(SCRIPT.parent))
    path = store(tmp_path, host, "suites/test_guide_cases.py::test_case7[tp-8]")
    assert gpu_ci.host_baselines(tmp_path / "baselines", host) == [path]


def test_a_red_night_starts_a_culprit_search_per_failing_shard(tmp_path: Path) -> None:
    from tests.result_docs import result_doc, write_doc

    red = result_doc("suites/t.py::test_a", [8.0], verdicts=[
        {"metric": "request_throughput", "kind": "regression", "gated": True}])
    write_doc(tmp_path / "night" / "results-mi300x-01-shard1" / "r1", red)
    write_doc(tmp_path / "night" / "results-mi300x-01-shard2" / "r2",
              result_doc("suites/t.py::test_b", [8.0]))
    proc, summary = gpu_ci(tmp_path, "culprit", "--host", "mi300x-01", "--vllm-build", "x",
                           "--results", str(tmp_path / "night"), "--builds", "builds.txt",
                           "--state", str(tmp_path / "state"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("running: ")]
    assert " culprit --results " in line and "shard1/r1" in line and "shard2" not in line
    assert "--builds builds.txt" in line and "--gpu-host mi300x-01" in line
    assert f"--out {tmp_path / 'state'}/culprit-mi300x-01-4242-r1" in line
    green, summary = gpu_ci(tmp_path, "culprit", "--host", "mi300x-01", "--vllm-build", "x",
                            "--results", str(tmp_path / "night" / "results-mi300x-01-shard2"),
                            "--dry-run")
    assert green.returncode == 0 and "no gated regression to search" in summary
    nightly = (WORKFLOWS / "nightly.yml").read_text()
    assert "gpu_ci.py \"${args[@]}\"" in nightly and "args=(culprit --host" in nightly
    assert "if: failure()" in nightly
