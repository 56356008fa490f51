"""GPU leases: exclusivity across xdist workers, crash release, visibility env.

A fake inventory comes from the amd-smi test double on PATH (real amd-smi JSON
shapes); servers are the gpu_server test double, which reports any two servers
on one GPU. What is under test is the lease, not an engine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_mi300x.gpus import discovery as gpus
from pytest_mi300x.gpus.leases import GpuLease, LeaseError, visibility_env

pytest_plugins = ["pytester"]

DOUBLES = Path(__file__).parent / "doubles"


def running(pid: int) -> bool:
    """A live process (a zombie nobody reaped yet has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def install_amd_smi(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    tool = bin_dir / "amd-smi"
    tool.write_text(f"#!{sys.executable}\nimport runpy, sys\n"
                    f"runpy.run_path({str(DOUBLES / 'amd_smi.py')!r}, run_name='__main__')\n")
    tool.chmod(0o755)
    return tool


@pytest.fixture
def fake_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two fake GPUs through an amd-smi double on PATH."""
    install_amd_smi(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    return tmp_path


def lease(tmp: Path, count: int = 1, timeout_s: float = 0.0) -> GpuLease:
    return GpuLease(count, accelerator="mi300x", inventory=lambda: gpus.discover("mi300x"),
                    lock_dir=tmp / "locks", label="t", timeout_s=timeout_s, poll_s=0.05)


def test_rocm_visibility_selects_physical_ids_and_renumbers_for_hip() -> None:
    assert visibility_env([2, 5], "mi300x") == {
        "ROCR_VISIBLE_DEVICES": "2,5", "HIP_VISIBLE_DEVICES": "0,1",
        "CUDA_VISIBLE_DEVICES": "0,1"}
    assert visibility_env([3], "cuda") == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                           "CUDA_VISIBLE_DEVICES": "3"}


@pytest.mark.parametrize("shape", ["list", "gpu_data"])
def test_discovery_reads_the_amd_smi_double_in_both_shapes(
        fake_gpus: Path, monkeypatch: pytest.MonkeyPatch, shape: str) -> None:
    monkeypatch.setenv("FAKE_AMD_SMI_SHAPE", shape)
    inv = gpus.discover("mi300x")
    assert inv.tool == "amd-smi" and inv.indices == (0, 1)
    assert inv.gpus[0].max_gfx_clock_mhz == 2100


def test_two_leases_never_share_a_gpu_and_a_third_waits(fake_gpus: Path) -> None:
    with lease(fake_gpus) as a, lease(fake_gpus) as b:
        assert {a.gpus, b.gpus} == {(0,), (1,)}
        with pytest.raises(LeaseError, match=r"GPU 0 leased by worker \S+ .* for t"):
            lease(fake_gpus).acquire()
    with lease(fake_gpus, count=2) as both:
        assert both.gpus == (0, 1)


def test_a_gpu_another_process_holds_is_skipped_and_named(
        fake_gpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_GPU_HOLDERS", "0:4242:python3")
    with lease(fake_gpus) as a:
        assert a.gpus == (1,)
        with pytest.raises(LeaseError) as exc:
            lease(fake_gpus).acquire()
    message = str(exc.value)
    assert "\n" not in message
    assert "GPU 0 held outside this harness: pid 4242 (python3, 120.0 GiB VRAM)" in message


def test_more_gpus_than_the_host_has_is_refused_at_once(fake_gpus: Path) -> None:
    with pytest.raises(LeaseError, match="needs 4 GPUs but amd-smi lists 2"):
        lease(fake_gpus, count=4, timeout_s=60).acquire()


def test_a_killed_holder_frees_its_gpu_and_its_orphan_server_is_stopped(fake_gpus: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from pytest_mi300x.gpus import discovery as gpus
        from pytest_mi300x.gpus.leases import GpuLease
        from pathlib import Path
        lease = GpuLease(2, accelerator="mi300x", inventory=lambda: gpus.discover("mi300x"),
                         lock_dir=Path({str(fake_gpus / 'locks')!r}), label="victim")
        lease.acquire()
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                  start_new_session=True)
        lease.attach(server.pid)
        print(server.pid, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    orphan = int(holder.stdout.readline())
    with pytest.raises(LeaseError, match=r"leased by worker \S+ .* for victim"):
        lease(fake_gpus).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert running(orphan)  # the server outlived its worker
    with lease(fake_gpus, count=2, timeout_s=10) as taken:
        assert taken.gpus == (0, 1)
        deadline = time.monotonic() + 10
        while running(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(orphan)


CONFTEST = '''
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_mi300x.engines.base import BuiltEngine

DOUBLES = Path({doubles!r})


@dataclass(frozen=True)
class GpuDoubleEngine:
    name: str = "vllm"

    def command(self, spec):
        return [sys.executable, str(DOUBLES / "gpu_server.py"), str(spec.port)]

    def environment(self, spec):
        return {{**spec.env, "VLLM_API_KEY": spec.api_key}}

    @property
    def health_path(self):
        return "/health"

    def version(self, base_url, api_key):
        return "0.0-double"

    def skip_reason(self, flag_set, version):
        return None

    def served_model_name(self, logical, model_path):
        return logical

    def cleanup_argv(self, spec):
        return None

    def refusal(self, log_tail):
        return None

    auth_probe = ("GET", "/v1/models")

    exact_output_lengths = True
    metric_series = {{}}


@pytest.fixture(autouse=True)
def double_engine(mi300x_session):
    mi300x_session.use_build("vllm", BuiltEngine(GpuDoubleEngine(), "0.0-double",
                                                   {{"build": "gpu-double"}}))


@pytest.fixture
def served_model():
    return "m"
'''

TESTS = '''
import os, signal, time
import pytest
from pytest_mi300x import FlagSet, flag_sets

SETS = flag_sets(*(FlagSet.of(f"set{{i}}", max_num_seqs=i + 1) for i in range(6)))


@pytest.mark.parametrize("step", [1, 2])
@SETS
def test_serve(llm_server, step):
    assert llm_server.spec.gpus and len(llm_server.spec.gpus) == 1
    time.sleep(0.3)
    llm_server.check_alive("during the test")


@flag_sets(FlagSet.of("victim", max_num_seqs=99))
def test_worker_dies_holding_a_lease(llm_server):
    # Once: xdist runs a crashed test again on a fresh worker, which must get a GPU.
    first = os.path.join(os.environ["DOUBLE_GPU_DIR"], "victim-killed")
    if not os.path.exists(first):
        open(first, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
'''


def make_fake_host(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """hosts.toml with a 2-GPU host, the double engine, the tests; returns the journal path."""
    model = pytester.path / "model"
    model.mkdir()
    (model / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0, "b": 1}}}')
    pytester.makefile(".toml", hosts=textwrap.dedent(f"""
        [hosts.fake2]
        accelerator = "mi300x"
        accelerator_count = 2
        tensor_parallel = 1
        launcher = "local"
        lock_dir = "{pytester.path / 'locks'}"
        # Generous: a worker waits for another's leases on a shared, possibly slow machine.
        lease_timeout_s = 900
        start_timeout_s = 300
        [hosts.fake2.models]
        "*" = "{model}"
    """))
    pytester.makeconftest(CONFTEST.format(doubles=str(DOUBLES)))
    pytester.makepyfile(test_gpu_servers=TESTS.format())
    claims = pytester.path / "claims"
    claims.mkdir()
    monkeypatch.setenv("DOUBLE_JOURNAL", str(pytester.path / "journal.jsonl"))
    monkeypatch.setenv("DOUBLE_GPU_DIR", str(claims))
    return pytester.path / "journal.jsonl"


def test_xdist_n4_two_fake_gpus_never_two_servers_on_one_gpu(
        pytester: pytest.Pytester, fake_gpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = make_fake_host(pytester, monkeypatch)
    # --dist load: tests of one flag set spread over workers, so servers start and
    # stop on every worker and the leases are contended as hard as they can be.
    result = pytester.runpytest_subprocess("-n", "4", "--dist", "load", "--gpu-host", "fake2",
                                           "-p", "xdist", timeout=1800)
    result.assert_outcomes(passed=12, failed=1)
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running*victim*"])
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [e for e in events if e["event"] == "collision"] == []
    starts = [e for e in events if e["event"] == "start"]
    assert {g for e in starts for g in e["gpus"]} == {0, 1}
    assert all(e["env"]["HIP_VISIBLE_DEVICES"] == "0" == e["env"]["CUDA_VISIBLE_DEVICES"]
               for e in starts)
    # The dead worker's lock was taken again (by a later lease or the controller's
    # sweep), and whoever took it stopped the server the worker left behind.
    output = "\n".join(result.outlines + result.errlines)
    assert re.search(r"GPU \d: stopping server pid \d+ left by dead worker gw\d", output)
    assert not [e["pid"] for e in starts if running(e["pid"])]  # nothing left running


def test_xdist_without_dist_keeps_each_flag_set_on_one_worker(
        pytester: pytest.Pytester, fake_gpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = make_fake_host(pytester, monkeypatch)
    result = pytester.runpytest_subprocess("-n", "4", "--gpu-host", "fake2", "-p", "xdist",
                                           "-v", timeout=1800)
    # The crash, then the victim again on the worker that replaced the dead one.
    result.assert_outcomes(passed=13, failed=1)
    result.stdout.fnmatch_lines(["*PASSED test_gpu_servers.py::test_worker_dies_holding*",
                                 "*worker 'gw*' crashed while running*victim*"])
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [e for e in events if e["event"] == "collision"] == []
    workers: dict[str, set[str]] = {}
    for line in result.stdout.lines:
        if "PASSED" in line and "test_serve[" in line:
            flag_set = line.split("test_serve[")[1].split("-")[0]
            workers.setdefault(flag_set, set()).add(line.split("]")[0].lstrip("["))
    assert len(workers) == 6 and all(len(w) == 1 for w in workers.values()), workers
