"""A package's releases from the package index, as the user's pip is set up to ask it.

The index URLs come from pip's own configuration (``pip config list``: its files and the
``PIP_*`` environment, so a mirror, a proxy index or credentials work as they do for pip);
each index's project page is read through the simple repository API (PEP 691 JSON, else the
PEP 503 HTML page; ``file://`` indexes too). A release's identity beyond its version is the
sha256 of the file this machine would install (the first wheel whose tags fit, else the
sdist). Credentials in an index URL are used, never shown.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

DEFAULT_INDEX = "https://pypi.org/simple"
ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
TIMEOUT_S = 30.0


class PackageIndexError(Exception):
    """The index cannot be read; one line naming it and the fix."""


@dataclass
class Release:
    version: str
    sha256: str = ""
    files: list[str] = field(default_factory=list)


def shown(url: str) -> str:
    """An index URL without its credentials."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def index_urls(python: str = sys.executable) -> list[str]:
    """The index URLs pip would use: index-url (default PyPI's) then extra-index-url, as
    ``pip config list`` reports them (environment over user over global files); ``no-index``
    leaves none."""
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found: dict[str, list[tuple[int, str]]] = {}
    rank = {":env:": 0, "install": 1, "global": 2}
    for line in out.splitlines():
        name, eq, value = line.partition("=")
        if not eq:
            continue
        section, _, option = name.rpartition(".")
        found.setdefault(option, []).append((rank.get(section, 3), value.strip().strip("'\"")))

    def best(option: str) -> str | None:
        values = sorted(found.get(option, []))
        return values[0][1] if values else None

    if (best("no-index") or "").lower() in ("1", "true", "yes", "on"):
        return []
    main = best("index-url") or DEFAULT_INDEX
    extra = (best("extra-index-url") or "").split()
    return [main, *extra]


def _request(url: str) -> tuple[bytes, str]:
    """(body, content type) of a project page; credentials in the URL go in a header."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        if path.is_dir():
            page = path / "index.html"
            if page.is_file():
                return page.read_bytes(), "text/html"
            # A folder of files (a find-links style index): each file a link.
            links = "".join(f'<a href="{p.name}">{p.name}</a>' for p in sorted(path.iterdir()))
            return links.encode(), "text/html"
        if path.is_file():
            return path.read_bytes(), "text/html"
        raise FileNotFoundError(str(path))
    headers = {"Accept": ACCEPT, "User-Agent": "pytest-mi300x-night"}
    if parts.username or parts.password:
        user = urllib.parse.unquote(parts.username or "")
        secret = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{user}:{secret}".encode()).decode()
        url = shown(url)
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),  # noqa: S310
                                timeout=TIMEOUT_S) as resp:
        return resp.read(), resp.headers.get("Content-Type", "")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        attr = dict(attrs)
        href = attr.get("href") or ""
        name = urllib.parse.unquote(urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1])
        _, _, fragment = href.partition("#")
        algo, _, digest = fragment.partition("=")
        self.files.append({"filename": name, "hashes": {algo: digest} if digest else {},
                           "yanked": "data-yanked" in attr})


def project_files(index: str, project: str) -> list[dict[str, Any]]:
    """The files an index lists for ``project`` (filename, hashes, yanked); empty when the
    index does not have it."""
    name = re.sub(r"[-_.]+", "-", project).lower()
    url = index.rstrip("/") + f"/{name}/"
    try:
        body, kind = _request(url)
    except FileNotFoundError:
        return []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise PackageIndexError(f"{shown(url)}: HTTP {exc.code}; check the index in your pip "
                          "configuration (pip config list)") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PackageIndexError(f"{shown(url)}: cannot be read ({reason}); check the network or "
                          "the index in your pip configuration (pip config list)") from None
    if "json" in kind:
        try:
            doc = json.loads(body)
        except ValueError:
            raise PackageIndexError(f"{shown(url)}: not a simple-API JSON page") from None
        return [{"filename": f.get("filename", ""), "hashes": f.get("hashes") or {},
                 "yanked": bool(f.get("yanked"))} for f in doc.get("files", [])]
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    return parser.files


def releases(project: str, indexes: list[str] | None = None) -> dict[str, Release]:
    """Every release of ``project`` the indexes list (not yanked), by version string."""
    from packaging.tags import sys_tags
    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        canonicalize_name,
        parse_sdist_filename,
        parse_wheel_filename,
    )

    here = set(sys_tags())
    wanted = canonicalize_name(project)
    found: dict[str, Release] = {}
    wheel_fits: dict[str, bool] = {}
    urls = index_urls() if indexes is None else indexes
    for index in urls:
        for f in project_files(index, project):
            name = str(f["filename"])
            try:
                if name.endswith(".whl"):
                    dist, version, _, tags = parse_wheel_filename(name)
                    fits = bool(here & set(tags))
                else:
                    dist, version = parse_sdist_filename(name)
                    fits = False
            except (InvalidWheelFilename, InvalidSdistFilename):
                continue
            if dist != wanted or f.get("yanked"):
                continue
            key = str(version)
            release = found.setdefault(key, Release(key))
            release.files.append(name)
            sha = str((f.get("hashes") or {}).get("sha256") or "")
            # This machine's wheel identifies the release best; an sdist next.
            if sha and (not release.sha256 or (fits and not wheel_fits.get(key))):
                release.sha256 = sha
                wheel_fits[key] = fits
    return found
