"""One GitHub issue per host and test with a confirmed regression, opened or updated.

With ``GITHUB_TOKEN`` and ``GITHUB_REPOSITORY`` (the workflow's; ``issues: write`` only on
the job that needs it) the night finds the open issue titled for the host and test and adds
a comment, or opens it; ``GITHUB_API_URL`` (set by Actions) names the API. Without a token
the body goes to a file in the night's folder, for a person to file. The token is sent in
a header, never written anywhere; bodies pass the project's redaction.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from pytest_mi300x.night.search import SearchRecord
from pytest_mi300x.night.state import NightRecord
from pytest_mi300x.results import redact
from pytest_mi300x.results.files import slug, write_text_atomic

LABEL = "performance-regression"
TIMEOUT_S = 30.0


def title(host: str, test: str) -> str:
    return f"Performance regression on {host}: {test}"


def body(night: NightRecord, test: str, search: SearchRecord | None, verdicts: str = "",
         run_url: str = "") -> str:
    t = night.tests.get(test, {})
    ref = night.reference
    lines = [f"`{test}` regressed on **{night.host}**, confirmed head to head.", "",
             f"- tonight's build: `{night.tonight.name}`"
             + (f" (`{night.tonight.digest}`)" if night.tonight.digest else ""),
             f"- last green build: `{ref.name if ref else '-'}`"
             + (f" (`{ref.digest}`)" if ref and ref.digest else ""),
             f"- gate: {t.get('gate', '-')}; head to head: {t.get('head_to_head', '-')}",
             f"- evidence: {t.get('why', '-')}",
             f"- change: {_num(t.get('change_pct'), '+.1f')}%, resolving "
             f"{_num(t.get('resolves_pct'), '.1f')}%",
             f"- night `{night.id}`" + (f": {run_url}" if run_url else ""), ""]
    if search is not None:
        lines += [f"**Culprit:** {search.line()}", ""]
    else:
        lines += ["**Culprit:** no search (`--culprit off`)", ""]
    if verdicts:
        lines += ["```", verdicts, "```", ""]
    return redact.text("\n".join(lines))


def _num(value: object, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def run_url() -> str:
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
    repo, run = os.environ.get("GITHUB_REPOSITORY"), os.environ.get("GITHUB_RUN_ID")
    return f"{server}/{repo}/actions/runs/{run}" if repo and run else ""


class GitHub:
    """The few REST calls an issue needs."""

    def __init__(self, token: str, repository: str, api: str | None = None) -> None:
        redact.register(token)
        self._token = token
        self.repository = repository
        self.api = (api or os.environ.get("GITHUB_API_URL") or "https://api.github.com"
                    ).rstrip("/")

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"{self.api}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self._token}",
                     "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28",
                     "Content-Type": "application/json", "User-Agent": "pytest-mi300x"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")

    def find(self, wanted: str) -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"state": "open", "labels": LABEL, "per_page": 100})
        for issue in self._call("GET", f"/repos/{self.repository}/issues?{query}") or []:
            if issue.get("title") == wanted and "pull_request" not in issue:
                return dict(issue)
        return None

    def open_or_update(self, wanted: str, text: str) -> str:
        found = self.find(wanted)
        if found is not None:
            self._call("POST", f"/repos/{self.repository}/issues/{found['number']}/comments",
                       {"body": text})
            return f"updated {found.get('html_url', '#' + str(found['number']))}"
        made = self._call("POST", f"/repos/{self.repository}/issues",
                          {"title": wanted, "body": text, "labels": [LABEL]})
        return f"opened {made.get('html_url', '#' + str(made.get('number')))}"


def file_issues(night: NightRecord, search: SearchRecord | None, folder: Path,
                verdicts: str = "") -> list[str]:
    """Open or update the issue of each confirmed regression; without a token, write each
    body to ``folder/issues/``. Lines saying what was done."""
    red = sorted(t for t, o in night.tests.items() if o.get("outcome") == "red")
    token = os.environ.get("GITHUB_TOKEN", "")
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    out = []
    for test in red:
        wanted = title(night.host, test)
        text = body(night, test, search, verdicts, run_url())
        if token and repository:
            try:
                out.append(f"issue for {test}: "
                           f"{GitHub(token, repository).open_or_update(wanted, text)}")
                continue
            except (urllib.error.URLError, OSError, ValueError) as exc:
                out.append(f"issue for {test}: the GitHub API refused it ({redact.text(str(exc))}"
                           "); its body is written to a file instead")
        path = folder / "issues" / f"{slug(night.host, 40)}-{slug(test, 80)}.md"
        write_text_atomic(path, f"# {wanted}\n\n{text}\n")
        out.append(f"issue for {test}: no GITHUB_TOKEN/GITHUB_REPOSITORY; body in {path}")
    return out
