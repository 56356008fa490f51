"""A branch's recent commits and the per-commit images that exist for them.

The field's practice (pytorch-integration-testing's vLLM benchmark workflow): walk the
branch back from HEAD and keep the commits whose image the registry has
(``docker manifest inspect``). The commits come from a shallow, blob-less fetch into a bare
repository in the user's cache (the state stays small: it may be synced to a data branch);
each kept image is resolved to its digest, so a build is its digest, never a tag that can
move.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pytest_mi300x.engines.docker import DOCKER_PREFIX
from pytest_mi300x.results.files import slug

__all__ = ["DOCKER_PREFIX", "Image", "ImageError", "inspect", "repository", "walk"]
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ImageError(Exception):
    """Commits or images that cannot be listed; one line naming what and the fix."""


@dataclass(frozen=True)
class Image:
    commit: str
    ref: str
    """The image by tag, as the template names it (without ``docker:``)."""
    digest: str

    @property
    def pinned(self) -> str:
        """The image by digest: ``repository@sha256:...``."""
        return f"{repository(self.ref)}@{self.digest}"


def repository(ref: str) -> str:
    """``registry:5000/org/name:tag`` -> ``registry:5000/org/name`` (a port is not a tag)."""
    ref = ref.split("@", 1)[0]
    head, sep, tail = ref.rpartition(":")
    return head if sep and "/" not in tail else ref


def git_commits(url: str, branch: str, depth: int, cache: Path) -> list[str]:
    """The branch's last ``depth`` commits, newest first (first parents)."""
    repo = cache / "git" / f"{slug(url, 60)}.git"
    shown = _no_credentials(url)

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                  text=True, timeout=600, check=False)
        except FileNotFoundError:
            raise ImageError("git is not installed; install git to walk a branch's "
                             "commits") from None
        except subprocess.TimeoutExpired:
            raise ImageError(f"git {args[0]} of {shown} took over 10 min; check the "
                             "network") from None
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise ImageError(f"git {args[0]} {shown} {branch}: {_no_credentials(why)}; "
                             "check the URL and the branch of --stream commits:URL@BRANCH")
        return done.stdout

    if not (repo / "HEAD").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", "-q")
    git("fetch", "-q", "--no-tags", f"--depth={depth}", "--filter=blob:none", url,
        f"refs/heads/{branch}")
    out = git("rev-list", "--first-parent", f"--max-count={depth}", "FETCH_HEAD")
    return [line.strip() for line in out.splitlines() if line.strip()]


def _no_credentials(text: str) -> str:
    return re.sub(r"//[^/@\s]+@", "//", text)


def inspect(ref: str, docker: str = "docker") -> str | None:
    """The digest of ``ref`` in its registry (linux/amd64 where it is a list), or None when
    the registry has no such image."""
    try:
        done = subprocess.run([docker, "manifest", "inspect", "--verbose", ref],
                              capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise ImageError("docker is not installed; a commits stream checks each image with "
                         "`docker manifest inspect`") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"docker manifest inspect {ref} took over 2 min; check the "
                         "registry") from None
    if done.returncode != 0:
        err = done.stderr.lower()
        if "no such manifest" in err or "not found" in err or "manifest unknown" in err:
            return None
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise ImageError(f"docker manifest inspect {ref}: {why}; check `docker login` and "
                         "the network")
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        raise ImageError(f"docker manifest inspect --verbose {ref}: not JSON") from None
    entries = doc if isinstance(doc, list) else [doc]
    for entry in entries:
        descriptor = entry.get("Descriptor") or {}
        platform = descriptor.get("platform") or {}
        if platform and (platform.get("os"), platform.get("architecture")) != \
                ("linux", "amd64"):
            continue
        digest = str(descriptor.get("digest") or "")
        if _DIGEST.match(digest):
            return digest
    raise ImageError(f"docker manifest inspect --verbose {ref}: no linux/amd64 digest in it")


def walk(url: str, branch: str, template: str, depth: int, cache: Path,
         known: dict[str, str] | None = None) -> tuple[list[Image], list[str]]:
    """Images of the branch's last ``depth`` commits that exist, oldest first, and the
    commits passed over for want of an image. ``known``: digests already resolved, by the
    commit's first 12 hex digits (a commit's image is not asked for again)."""
    if "{sha}" not in template:
        raise ImageError(f"--image-template {template!r} has no {{sha}}; write e.g. "
                         "docker:rocm/vllm-ci:{sha}")
    known = known or {}
    kept: list[Image] = []
    missing: list[str] = []
    for sha in git_commits(url, branch, depth, cache):
        ref = template.format(sha=sha).removeprefix(DOCKER_PREFIX)
        digest = known.get(sha[:12]) or inspect(ref)
        if digest is None:
            missing.append(sha)
        else:
            kept.append(Image(sha, ref, digest))
    return kept[::-1], missing
