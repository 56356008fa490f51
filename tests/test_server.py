"""ServerProcess mechanics, on a lifecycle test double (tests/doubles/lifecycle_server.py)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from pytest_mi300x.net import free_port
from pytest_mi300x.servers.process import (
    ServerExited,
    ServerProcess,
    ServerStartTimeout,
    error_line,
    redact_env,
)

DOUBLE = Path(__file__).parent / "doubles" / "lifecycle_server.py"


def make(tmp_path: Path, mode: str, delay: float = 0.0, **kw: float) -> ServerProcess:
    port = free_port()
    return ServerProcess([sys.executable, str(DOUBLE), mode, str(port), str(delay)],
                         env=dict(os.environ), log_path=tmp_path / "server.log",
                         ready_url=f"http://127.0.0.1:{port}/health", **kw)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def child_pid(log: Path) -> int:
    for _ in range(50):
        found = re.search(r"child pid (\d+)", log.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    raise AssertionError("double never reported its child")


def test_ready_then_whole_tree_stopped(tmp_path: Path) -> None:
    with make(tmp_path, "serve", delay=0.5) as server:
        assert server.alive()
        assert server.startup_s is not None and server.startup_s >= 0.5
        child = child_pid(server.log_path)
        assert alive(child)
    assert not server.alive()
    assert not alive(child)


def test_exit_before_ready_raises_at_once_with_error_line_and_tail(tmp_path: Path) -> None:
    # At once, as behaviour: the exit itself ends the wait (ServerExited), where waiting
    # out the start timeout would have raised ServerStartTimeout after 120 s.
    server = make(tmp_path, "crash", delay=0.3, start_timeout=120)
    with pytest.raises(ServerExited) as exc:
        server.start()
    assert "code 3" in str(exc.value)
    assert "ValueError: simulated engine failure" in str(exc.value).splitlines()[0]
    assert "double starting mode=crash" in exc.value.log_tail


def test_start_timeout_stops_the_process(tmp_path: Path) -> None:
    server = make(tmp_path, "serve", delay=30, start_timeout=1.0)
    with pytest.raises(ServerStartTimeout, match="not ready"):
        server.start()
    assert not server.alive()


def test_sigterm_ignored_escalates_to_sigkill(tmp_path: Path) -> None:
    server = make(tmp_path, "stubborn", stop_grace=1.0)
    server.start()
    child = child_pid(server.log_path)
    server.stop()  # SIGTERM is ignored: only the SIGKILL after the grace ends them
    assert not server.alive() and not alive(child)


def test_secrets_are_redacted() -> None:
    env = redact_env({"HF_TOKEN": "hf_x", "VLLM_API_KEY": "k", "OPENAI_API_KEY": "k",
                      "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert env == {"HF_TOKEN": "<redacted>", "VLLM_API_KEY": "<redacted>",
                   "OPENAI_API_KEY": "<redacted>", "VLLM_CPU_KVCACHE_SPACE": "1"}


def test_error_line_prefers_the_last_error() -> None:
    tail = ("INFO start\nTraceback (most recent call last):\n  x\n"
            "api_server.py: error: unrecognized arguments: --no-such-flag")
    assert error_line(tail) == "api_server.py: error: unrecognized arguments: --no-such-flag"
    assert error_line("INFO all fine") is None


def test_error_line_finds_the_root_cause_behind_vllms_wrapper() -> None:
    tail = "\n".join([
        "(APIServer) WARNING [x.py:1] fd limit errors like `OSError: [Errno 24] Too many`",
        "(Worker pid=1) ERROR [m.py:953] RuntimeError: Cannot find any model weights with `/m`",
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core",
    ])
    assert error_line(tail) == (
        "(Worker pid=1) ERROR [m.py:953] RuntimeError: Cannot find any model weights with `/m`")


def test_nice_lowers_the_whole_server_and_its_autogroup(tmp_path: Path) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    with make(tmp_path, "serve", delay=0.5, nice=7) as server:
        assert server.pid is not None
        child = child_pid(server.log_path)
        assert os.getpriority(os.PRIO_PROCESS, server.pid) == max(7, ours)
        assert os.getpriority(os.PRIO_PROCESS, child) == max(7, ours)  # forked after: too
        autogroup = Path(f"/proc/{server.pid}/autogroup")
        if autogroup.exists():
            assert autogroup.read_text().split()[-1] == "7"
            assert server.scheduling == {"nice": 7, "autogroup_nice": 7}
        else:
            assert server.scheduling == {"nice": 7, "autogroup_nice": None}
    # This process, which the load generator runs in, keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours


def test_nice_zero_leaves_the_server_be(tmp_path: Path) -> None:
    with make(tmp_path, "serve", nice=0) as server:
        assert server.pid is not None
        assert os.getpriority(os.PRIO_PROCESS, server.pid) == os.getpriority(os.PRIO_PROCESS, 0)
        assert server.scheduling == {}
