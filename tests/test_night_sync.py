"""The night's state through a data branch (pytest_mi300x/night/sync.py), against a real bare
git repository standing in for GitHub: each host writes only its own files, two hosts pushing
at once both land, a pull keeps what this runner has not pushed yet, no secret is pushed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_mi300x.night.sync import GitBranchSync, Sync, SyncError

BRANCH = "night-state"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(path))
    return path


def branch_files(remote: Path) -> dict[str, str]:
    """Every file on the data branch with its content."""
    names = git("ls-tree", "-r", "--name-only", BRANCH, cwd=remote).split()
    return {n: git("show", f"{BRANCH}:{n}", cwd=remote) for n in names}


def write(state: Path, rel: str, text: str) -> None:
    path = state / "hosts" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def sync(tmp_path: Path, remote: Path, name: str, **kw: object) -> GitBranchSync:
    return GitBranchSync(tmp_path / name / "state", str(remote), BRANCH, backoff_s=0, **kw)  # type: ignore[arg-type]


def test_a_host_pushes_only_its_own_folder_and_a_fresh_runner_pulls_every_host(
        tmp_path: Path, remote: Path) -> None:
    a: Sync = sync(tmp_path, remote, "a")
    b = sync(tmp_path, remote, "b")
    state_a = tmp_path / "a" / "state"
    write(state_a, "mi300x-01/history.jsonl", '{"night": 1}\n')
    write(state_a, "mi300x-01/noise/t1.json", "{}")
    a.push("mi300x-01")
    write(b.state, "mi300x-02/history.jsonl", '{"night": 7}\n')
    write(b.state, "mi300x-01/history.jsonl", "stale copy b pulled long ago\n")
    b.push("mi300x-02")
    assert branch_files(remote) == {"hosts/mi300x-01/history.jsonl": '{"night": 1}\n',
                                    "hosts/mi300x-01/noise/t1.json": "{}",
                                    "hosts/mi300x-02/history.jsonl": '{"night": 7}\n'}
    fresh = sync(tmp_path, remote, "fresh")  # an ephemeral runner: no state, no clone
    fresh.pull()
    assert (fresh.state / "hosts/mi300x-02/history.jsonl").read_text() == '{"night": 7}\n'
    assert (fresh.state / "hosts/mi300x-01/noise/t1.json").read_text() == "{}"
    log = git("log", "--format=%s", BRANCH, cwd=remote).split("\n")
    assert log[:2] == ["night state: mi300x-02", "night state: mi300x-01"]


def test_a_push_refused_as_not_a_fast_forward_is_made_again_on_the_new_tip(
        tmp_path: Path, remote: Path) -> None:
    a, b = sync(tmp_path, remote, "a"), sync(tmp_path, remote, "b")
    write(a.state, "mi300x-01/history.jsonl", "1\n")
    a.push("mi300x-01")
    write(b.state, "mi300x-02/history.jsonl", "2\n")
    # Between a's fetch and a's push, host b pushes (git runs a's pre-push hook there):
    # a's first push is refused and a makes it again on b's commit.
    hook = a.clone / ".git" / "hooks" / "pre-push"
    marker = tmp_path / "b-pushed"
    hook.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        [ -e {marker} ] && exit 0
        touch {marker}
        env -u GIT_DIR -u GIT_INDEX_FILE -u GIT_WORK_TREE {sys.executable} -c '
        from pathlib import Path
        from pytest_mi300x.night.sync import GitBranchSync
        GitBranchSync(Path("{b.state}"), "{remote}", "{BRANCH}", backoff_s=0).push("mi300x-02")'
        """))
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    lines: list[str] = []
    a.log = lines.append
    write(a.state, "mi300x-01/history.jsonl", "1\n3\n")
    a.push("mi300x-01")
    assert marker.exists()
    assert any("moved on" in line and "(1/5)" in line for line in lines), lines
    assert lines[-1] == "mi300x-01: pushed to night-state (attempt 2)"
    assert branch_files(remote) == {"hosts/mi300x-01/history.jsonl": "1\n3\n",
                                    "hosts/mi300x-02/history.jsonl": "2\n"}


def test_hosts_pushing_at_the_same_time_all_land(tmp_path: Path, remote: Path) -> None:
    hosts = [f"mi300x-{i:02d}" for i in range(1, 5)]
    code = ("import sys; from pathlib import Path; "
            "from pytest_mi300x.night.sync import GitBranchSync; "
            "GitBranchSync(Path(sys.argv[1]), sys.argv[2], 'night-state', attempts=20, "
            "backoff_s=0.05).push(sys.argv[3])")
    procs = []
    for host in hosts:
        state = tmp_path / host / "state"
        write(state, f"{host}/history.jsonl", f"{host}\n")
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(state), str(remote),
                                       host], stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(hosts), errors
    assert branch_files(remote) == {f"hosts/{h}/history.jsonl": f"{h}\n" for h in hosts}


def test_a_pull_takes_the_branchs_changes_and_keeps_what_this_runner_has_not_pushed(
        tmp_path: Path, remote: Path) -> None:
    one, other = sync(tmp_path, remote, "one"), sync(tmp_path, remote, "other")
    write(one.state, "h1/a.json", "a1")
    write(one.state, "h1/gone.json", "x")
    one.push("h1")
    other.pull()
    assert (other.state / "hosts/h1/gone.json").exists()
    # h1 moves on (a changed, gone deleted) while the other runner wrote b and has
    # not pushed it (last night's push failed).
    write(one.state, "h1/a.json", "a2")
    (one.state / "hosts/h1/gone.json").unlink()
    one.push("h1")
    write(other.state, "h2/b.json", "unpushed")
    lines: list[str] = []
    other.log = lines.append
    other.pull()
    assert (other.state / "hosts/h1/a.json").read_text() == "a2"
    assert not (other.state / "hosts/h1/gone.json").exists()
    assert (other.state / "hosts/h2/b.json").read_text() == "unpushed"
    # A file changed on both sides keeps this runner's copy, and says so.
    write(other.state, "h1/a.json", "changed here")
    write(one.state, "h1/a.json", "a3")
    one.push("h1")
    other.pull()
    assert (other.state / "hosts/h1/a.json").read_text() == "changed here"
    assert any("hosts/h1/a.json changed here and on night-state" in x for x in lines), lines


def test_nothing_changed_pushes_nothing(tmp_path: Path, remote: Path) -> None:
    a = sync(tmp_path, remote, "a")
    write(a.state, "h1/a.json", "1")
    a.push("h1")
    before = git("rev-parse", BRANCH, cwd=remote)
    lines: list[str] = []
    a.log = lines.append
    a.push("h1")
    assert git("rev-parse", BRANCH, cwd=remote) == before
    assert lines == ["h1: nothing new to push to night-state"]


def test_a_secret_in_the_state_stops_the_push(tmp_path: Path, remote: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_MI300X_SYNC_TOKEN", "ghs_abcdefghijklmnop0123")
    a = sync(tmp_path, remote, "a")
    write(a.state, "h1/ok.json", "{}")
    write(a.state, "h1/leak.log", "Authorization: ghs_abcdefghijklmnop0123\n")
    with pytest.raises(SyncError, match=r"leak\.log holds the value of a secret"):
        a.push("h1")
    assert git("branch", "--list", BRANCH, cwd=remote) == ""


def test_a_symlink_in_the_state_is_not_followed(tmp_path: Path, remote: Path) -> None:
    a = sync(tmp_path, remote, "a")
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    write(a.state, "h1/a.json", "1")
    os.symlink(outside, a.state / "hosts/h1/link.txt")
    a.push("h1")
    assert branch_files(remote) == {"hosts/h1/a.json": "1"}


def test_bad_remotes_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="without it and hand git the token through its "
                                        "environment"):
        GitBranchSync(tmp_path / "s", "https://x-access-token:ghs_secret@github.com/o/r.git")
    missing = GitBranchSync(tmp_path / "s", str(tmp_path / "no-such.git"), BRANCH)
    with pytest.raises(SyncError, match=r"^cannot reach .*no-such\.git: ") as info:
        missing.pull()
    assert "\n" not in str(info.value)


def test_the_manifest_records_what_the_branch_holds(tmp_path: Path, remote: Path) -> None:
    a = sync(tmp_path, remote, "a")
    write(a.state, "h1/a.json", "1")
    a.push("h1")
    doc = json.loads((a.state / ".sync-manifest.json").read_text())
    assert doc["branch"] == BRANCH and list(doc["files"]) == ["h1/a.json"]


def test_night_sync_pushes_one_hosts_files_and_pulls_them_back(tmp_path: Path) -> None:
    """`pytest-mi300x night sync` as the workflows run it: the token from its variable
    reaches git through its environment only, masked in the job log, in no file."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    state = tmp_path / "state"
    (state / "hosts" / "mi300x-01").mkdir(parents=True)
    (state / "hosts" / "mi300x-01" / "history.jsonl").write_text("{}\n")
    common = ["--branch", "night-state", "--remote", str(remote)]
    env = {**os.environ, "PYTEST_MI300X_SYNC_TOKEN": "ghs_synctoken0123",
           "GITHUB_ACTIONS": "true"}

    def night_sync(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_mi300x.cli", "night", "sync",
                               *args, *common], capture_output=True, text=True, env=env)

    proc = night_sync("push", "--state", str(state))
    assert proc.returncode == 2 and "push needs --gpu-host" in proc.stderr
    proc = night_sync("push", "--state", str(state), "--gpu-host", "mi300x-01")
    assert proc.returncode == 0, proc.stderr
    assert "::add-mask::" in proc.stdout and "ghs_synctoken0123" not in proc.stdout
    clone = tmp_path / ".state.sync"
    assert "ghs_synctoken0123" not in (clone / ".git" / "config").read_text()
    fresh = tmp_path / "fresh"
    proc = night_sync("pull", "--state", str(fresh))
    assert proc.returncode == 0, proc.stderr
    assert (fresh / "hosts" / "mi300x-01" / "history.jsonl").read_text() == "{}\n"
