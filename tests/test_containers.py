"""Docker containers: named per server start, labelled with their session, stopped by name,
and removed after a crash by the records reaper or by their labels.

The `docker` command is a test double (tests/doubles/docker.py): containers are local
processes in sessions of their own, so a SIGKILLed client leaves its "container" running
as docker does, and a real (double) server answers in it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pytest_mi300x.cli import main as cli
from pytest_mi300x.engines.base import LaunchSpec
from pytest_mi300x.engines.docker import HOST_LABEL, OWNER_LABEL, Dockerized, container_name
from pytest_mi300x.engines.flags import DEFAULT_FLAGS
from pytest_mi300x.gpus.leases import stop_orphan
from pytest_mi300x.hosts.profile import DockerSettings
from pytest_mi300x.servers.pool import ServerPool
from pytest_mi300x.servers.records import ServerRecords, start_time
from tests.doubles import install_command
from tests.test_pool import DoubleEngine, spec_for

ROOT = Path(__file__).parent.parent
IMAGE = "double/lifecycle:1"


@pytest.fixture
def docker_double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The docker double first on PATH; returns its state folder."""
    install_command(tmp_path / "bin", "docker", "docker.py")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    state = tmp_path / "docker-state"
    monkeypatch.setenv("DOCKER_DOUBLE_STATE", str(state))
    yield state
    # Nothing a test left behind outlives it.
    for path in (state / "containers").glob("*.json"):
        subprocess.run(["docker", "rm", "-f", path.stem], capture_output=True, check=False)


def calls(state: Path, event: str = "call") -> list[dict[str, Any]]:
    lines = (state / "journal.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


def running(pid: int) -> bool:
    return start_time(pid) is not None


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


def engine() -> Dockerized:
    return Dockerized(DoubleEngine(), IMAGE, "mi300x", DockerSettings())


def test_a_server_start_gets_its_own_container_name() -> None:
    def spec(server_id: str) -> LaunchSpec:
        return LaunchSpec(model="m", served_model_name="m", host="127.0.0.1", port=8100,
                          api_key="k", flag_set=DEFAULT_FLAGS, server_id=server_id)

    a, b = ServerPool(Path("unused")), ServerPool(Path("unused"))
    key = "vllm-llama-3.1-70b-seed=1024+x-0123456789-abcdef01"
    names = {container_name(spec(p.server_id(key, g))) for p in (a, b) for g in (1, 2)}
    assert len(names) == 4  # per session and per start of the same server
    for name in names:
        assert name.startswith("pytest-mi300x-") and "seed_1024_x" in name
        assert all(c.isalnum() or c in "_.-" for c in name)  # what docker accepts


def test_the_pool_stops_its_container_by_name(docker_double: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The client dies on SIGTERM without forwarding it: only the name stops the container.
    monkeypatch.setenv("DOCKER_DOUBLE_SIG_PROXY", "0")
    records = ServerRecords(tmp_path / "records")
    with ServerPool(tmp_path / "logs", start_timeout=30, records=records) as pool:
        server = pool.acquire("vllm-m-default", engine(), spec_for())
        [run] = calls(docker_double, "run")
        name = run["name"]
        assert name == f"pytest-mi300x-{pool.tag}-vllm-m-default-1"
        assert run["labels"] == {OWNER_LABEL: f"{os.getpid()}:{start_time(os.getpid())}",
                                 HOST_LABEL: socket.gethostname()}
        assert server.process.argv[server.process.argv.index("--name") + 1] == name
        assert run["env"]["VLLM_API_KEY"] == "secret-key"  # by name, not on the argv
        assert "secret-key" not in " ".join(run["docker_argv"])
        [record] = records.read()
        assert record.cleanup == ("docker", "rm", "-f", name)
        container = run["pid"]
        assert running(container)
    assert ["rm", "-f", name] in [c["argv"] for c in calls(docker_double)]
    assert wait_gone(container)
    assert records.read() == []


SESSION = """
import json, os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from pytest_mi300x.engines.docker import Dockerized
from pytest_mi300x.hosts.profile import DockerSettings
from pytest_mi300x.servers.pool import ServerPool
from pytest_mi300x.servers.records import ServerRecords
from tests.test_pool import DoubleEngine, spec_for

pool = ServerPool(Path({logs!r}), start_timeout=30,
                  records=ServerRecords(Path({cache!r}) / "servers"))
server = pool.acquire("vllm-m-crash", Dockerized(DoubleEngine(), {image!r}, "mi300x",
                                                 DockerSettings()), spec_for())
print(json.dumps({{"port": server.spec.port, "client": server.process.pid}}), flush=True)
os.killpg(server.process.pid, signal.SIGKILL)  # the docker client dies without a word
os.kill(os.getpid(), signal.SIGKILL)  # and so does the session
"""


@pytest.mark.parametrize("records_kept", [True, False], ids=["by-record", "by-label"])
def test_a_killed_session_leaves_its_container_and_clean_removes_it(
        docker_double: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        records_kept: bool) -> None:
    cache = tmp_path / "cache"
    script = SESSION.format(root=str(ROOT), logs=str(tmp_path / "logs"), cache=str(cache),
                            image=IMAGE)
    session = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60, check=False)
    assert session.returncode == -signal.SIGKILL, session.stderr
    started = json.loads(session.stdout.splitlines()[0])
    [run] = calls(docker_double, "run")
    assert wait_gone(started["client"])
    assert running(run["pid"])  # the container outlived its client and its session
    with urllib.request.urlopen(f"http://127.0.0.1:{started['port']}/health", timeout=5) as r:
        assert r.status == 200  # and still serves
    # Containers that are not an ended session's are left alone: a live owner's, and one
    # of another machine (pids there mean nothing here).
    me = f"{os.getpid()}:{start_time(os.getpid())}"
    for name, owner, host in (("live-owner", me, socket.gethostname()),
                              ("other-host", "1:1", "elsewhere")):
        subprocess.run(["docker", "run", "-d", "--name", name, "--label", f"{OWNER_LABEL}={owner}",
                        "--label", f"{HOST_LABEL}={host}", "--entrypoint", "sleep", IMAGE,
                        "60"], check=True, capture_output=True)
    if not records_kept:
        for path in (cache / "servers").glob("*"):
            path.unlink()
    assert cli(["clean", "--engine-cache", str(cache)]) == 0
    out = capsys.readouterr().out
    if records_kept:
        assert f"ran docker rm -f {run['name']}" in out
    else:
        assert f"removed container {run['name']} (running), left by session" in out
    assert wait_gone(run["pid"])
    listed = subprocess.run(["docker", "ps", "-a", "--format", "{{json .}}"],
                            capture_output=True, text=True, check=True).stdout
    assert sorted(json.loads(line)["Names"] for line in listed.splitlines()) == [
        "live-owner", "other-host"]
    assert cli(["clean", "--engine-cache", str(cache)]) == 0
    assert "nothing left running by an ended session" in capsys.readouterr().out


def test_the_next_lease_holder_removes_a_dead_workers_container(
        docker_double: Path, tmp_path: Path) -> None:
    subprocess.run(["docker", "run", "-d", "--name", "orphan", "--entrypoint", "sleep", IMAGE,
                    "60"], check=True, capture_output=True)
    [run] = calls(docker_double, "run")
    locks = tmp_path / "locks"
    locks.mkdir()
    # What a worker killed with its server's client wrote beside GPU 3's lock.
    (locks / "gpu-3.owner.json").write_text(json.dumps({
        "pid": 1, "worker": "gw1", "server_pgid": 2**22 + 1, "server_start": "0",
        "cleanup": ["docker", "rm", "-f", "orphan"]}))
    said: list[str] = []
    stop_orphan(locks, 3, said.append)
    assert wait_gone(run["pid"])
    assert said == ["GPU 3: running docker rm -f orphan for dead worker gw1"]


def test_labels_name_the_machine_and_the_owning_session() -> None:
    spec = spec_for()("127.0.0.1", 8123)
    argv = engine().command(spec)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--label"] == [
        f"{HOST_LABEL}={socket.gethostname()}", f"{OWNER_LABEL}=unknown"]
    assert container_name(spec) == "pytest-mi300x-8123"  # a spec no pool named


def test_clean_without_a_docker_daemon_says_containers_were_not_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "docker"  # the CLI is there, its daemon is not (as on this machine)
    broken.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at "
                      "unix:///var/run/docker.sock. Is the docker daemon running?' >&2\n"
                      "exit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert cli(["clean", "--engine-cache", str(tmp_path / "cache")]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "nothing left running by an ended session (containers not checked)"
    assert err.startswith("docker: could not list containers (`docker ps -a ...` failed: "
                          "Cannot connect to the Docker daemon")
