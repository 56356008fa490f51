"""What the GPU workflows do around `pytest-mi300x night` and `baselines refresh`.

  preflight     (hosted) the scheduled hosts, and those with an online runner: GitHub's
                runners API with $RUNNERS_TOKEN (admin read); without it, every host
  statuses      (hosted) each host's night status from the night artifacts; the hosts whose
                night confirmed a regression (they get a culprit job)
  offer         after a refresh: the baselines made, how many server starts each holds, and
                how to commit them
  prune-images  the per-commit images of the stream's repository but the newest --keep

The state's data branch is `pytest-mi300x night sync pull|push` (night/sync.py).
Outputs go to $GITHUB_OUTPUT, the job summary to $GITHUB_STEP_SUMMARY (or --summary FILE).
preflight, statuses and prune-images need only the standard library (hosted jobs run them
without the harness).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def fail(message: str) -> int:
    print(f"::error::{message}")
    print(f"gpu_ci.py: {message}", file=sys.stderr)
    return 2


def summary(args: argparse.Namespace, text: str) -> None:
    print(text)
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


def output(**values: object) -> None:
    """Step outputs (compact JSON for lists, so `!= '[]'` works in the workflow)."""
    lines = [f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
             for k, v in values.items()]
    print("\n".join(lines))
    path = os.environ.get("GITHUB_OUTPUT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")


def host_list(text: str, what: str) -> list[str]:
    """A JSON list of host profile names, or ValueError saying what to write."""
    example = 'e.g. ["mi300x-01", "mi300x-02"]'
    if not text.strip():
        raise ValueError(f"no {what}: set the repository variable NIGHT_HOSTS (Settings → "
                         f"Secrets and variables → Actions → Variables) to a JSON list, "
                         f"{example}")
    try:
        hosts = json.loads(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not JSON; write a list, {example}") from None
    if not isinstance(hosts, list) or not hosts or not all(
            isinstance(h, str) and HOST_NAME.match(h) for h in hosts):
        raise ValueError(f"{what} {text!r} is not a list of host names (letters, digits, "
                         f". _ -); write {example}")
    return list(dict.fromkeys(hosts))


# -- preflight ------------------------------------------------------------------------

def fetch_runners(api: str, scope: str, token: str) -> list[dict[str, object]]:
    """Every self-hosted runner of ``scope`` (repos/OWNER/REPO or orgs/ORG), all pages."""
    runners: list[dict[str, object]] = []
    page = 1
    while True:
        request = urllib.request.Request(
            f"{api}/{scope}/actions/runners?per_page=100&page={page}",
            headers={"Accept": "application/vnd.github+json",
                     "Authorization": f"Bearer {token}",
                     "X-GitHub-Api-Version": "2022-11-28"})
        with urllib.request.urlopen(request, timeout=30) as response:
            doc = json.load(response)
        batch = doc.get("runners", [])
        runners += batch
        if len(batch) < 100 or len(runners) >= int(doc.get("total_count", 0)):
            return runners
        page += 1


def runner_states(runners: list[dict[str, object]], host: str) -> list[str]:
    """'name (status)' of each runner labelled gpu-<host> (labels match case-insensitively,
    as GitHub matches them)."""
    label = f"gpu-{host}".lower()
    out = []
    for runner in runners:
        labels = runner.get("labels") or []
        names = {str(x.get("name", "")).lower() for x in labels if isinstance(x, dict)}
        if label in names:
            out.append(f"{runner.get('name')} ({runner.get('status')})")
    return out


def preflight(args: argparse.Namespace) -> int:
    try:
        scheduled = host_list(args.hosts, "host list")
    except ValueError as exc:
        return fail(str(exc))
    token = os.environ.get("RUNNERS_TOKEN", "")
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    scope = (f"orgs/{args.org}" if args.org
             else f"repos/{os.environ.get('GITHUB_REPOSITORY', 'OWNER/REPO')}")
    lines = ["## Preflight: which hosts run tonight", ""]
    if not token:
        lines.append("No `NIGHT_RUNNERS_TOKEN` secret, so the runners' states cannot be "
                     "read (GitHub's runners API needs admin read: docs/ci.md). Every "
                     "scheduled host is sent a night; one whose runner is offline waits in "
                     "the queue, up to a day, without holding the other hosts.")
        output(hosts=scheduled, scheduled=scheduled)
        summary(args, "\n".join(lines) + "\n")
        return 0
    try:
        runners = fetch_runners(api, scope, token)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = (f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError)
                  else str(getattr(exc, "reason", exc)))
        lines.append(f"The runners API ({api}/{scope}/actions/runners) answered: {reason}. "
                     "Every scheduled host is sent a night (check the token's access: "
                     "docs/ci.md).")
        print(f"::warning title=preflight::runners API: {reason}; every host scheduled")
        output(hosts=scheduled, scheduled=scheduled)
        summary(args, "\n".join(lines) + "\n")
        return 0
    online: list[str] = []
    lines += ["| host | runners (label gpu-<host>) | tonight |", "|---|---|---|"]
    for host in scheduled:
        states = runner_states(runners, host)
        up = any(s.endswith("(online)") for s in states)
        if up:
            online.append(host)
        else:
            print(f"::warning title=preflight: {host} skipped::no online runner labelled "
                  f"gpu-{host} ({', '.join(states) or 'none registered'})")
        lines.append(f"| {host} | {', '.join(states) or 'none registered'} | "
                     f"{'night' if up else 'skipped: no online runner'} |")
    output(hosts=online, scheduled=scheduled)
    summary(args, "\n".join(lines) + "\n")
    return 0


# -- statuses -------------------------------------------------------------------------

def read_status(folder: Path) -> dict[str, str]:
    """night-out/status of one host's artifact: status=... and exit=... lines."""
    path = folder / "night-out" / "status"
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def statuses(args: argparse.Namespace) -> int:
    try:
        scheduled = host_list(args.scheduled, "scheduled hosts")
        ran = json.loads(args.hosts or "[]")
    except ValueError as exc:
        return fail(str(exc))
    if args.continue_culprits:
        output(red=ran)
        summary(args, "## Continuing pending culprit searches\n\n"
                + "".join(f"- {h}\n" for h in ran))
        return 0
    red: list[str] = []
    lines = ["## Tonight's nights", "", "| host | status | exit | what follows |",
             "|---|---|---|---|"]
    follows = {"green": "nothing", "red": "culprit job on this host; an issue per test",
               "undecided": "nothing (not a failure; a warning)",
               "infra": "the host needs a look; no culprit search"}
    for host in scheduled:
        if host not in ran:
            lines.append(f"| {host} | skipped | - | no online runner (preflight) |")
            continue
        status = read_status(Path(args.downloaded) / f"night-{host}")
        state, code = status.get("status", "none"), status.get("exit", "-")
        if state == "red":
            red.append(host)
        if not status:
            print(f"::error title=night {host}::the night job ended without a status "
                  "(cancelled, timed out or its runner lost): see its log")
            note = "the night job ended without a status: see its log"
        elif state == "none":
            note = f"the night exited {code} without a status: see its log"
        else:
            note = follows.get(state, "unknown status")
        lines.append(f"| {host} | {state} | {code} | {note} |")
    output(red=red)
    summary(args, "\n".join(lines) + "\n")
    return 0


# -- offer ----------------------------------------------------------------------------

def offer(args: argparse.Namespace) -> int:
    from pytest_mi300x.judge.baselines import BaselineStore
    from pytest_mi300x.results.files import slug

    root = Path(args.baselines_dir)
    folder = root / slug(args.host)
    stored = [(p, b) for p, b in BaselineStore(root).all() if p.is_relative_to(folder)]
    if not stored:
        summary(args, f"## {args.host}: no baselines were made\n\n`pytest-mi300x baselines "
                      f"refresh` wrote nothing under `{folder}/`; see the refresh jobs' "
                      "logs for the tests that failed or skipped.\n")
        return 1
    short = [p for p, b in stored if b.server_count < args.servers]
    run_id = os.environ.get("GITHUB_RUN_ID", "RUN_ID")
    repo = os.environ.get("GITHUB_REPOSITORY", "OWNER/REPO")
    listed = "\n".join(f"- `{p}`: {b.server_count} server start(s), "
                       f"{len(b.repetitions)} repetition(s)" for p, b in stored[:50])
    more = f"\n- ... and {len(stored) - 50} more" if len(stored) > 50 else ""
    warn = (f"\n**{len(short)} baseline(s) hold fewer than the {args.servers} server starts "
            "asked** (a start failed or skipped for them): run the workflow again for those "
            "tests before relying on them.\n" if short else "")
    summary(args, f"""## {args.host}: {len(stored)} baseline(s) made, ready to commit
{warn}
Made by `pytest-mi300x baselines refresh` with `{args.vllm_build}`, one job per server
start, uploaded as the artifact **`baselines-{args.host}`**. Nothing is committed until you
do: check the figures (`pytest-mi300x baselines show --baselines-dir {root}`), then in a
checkout of this branch:

```bash
rm -rf {folder} && mkdir -p {folder}
gh run download {run_id} -R {repo} -n baselines-{args.host} -D {folder}
git add {folder}
git commit -m "baselines: {args.host} with {args.vllm_build}"
```

{listed}{more}
""")
    return 0


# -- prune-images ---------------------------------------------------------------------

def image_repository(template: str) -> str | None:
    """rocm/vllm-ci of docker:rocm/vllm-ci:{sha}; None for a template that is no image."""
    if not template.startswith("docker:") or "{sha}" not in template:
        return None
    ref = template.removeprefix("docker:").split("@", 1)[0]
    return ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref


def created(line: dict[str, str]) -> datetime:
    """`docker image ls`'s CreatedAt, e.g. '2026-12-01 03:04:05 +0000 UTC'."""
    try:
        return datetime.strptime(line.get("CreatedAt", "")[:25], "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return datetime.fromtimestamp(0).astimezone()


def prune_images(args: argparse.Namespace) -> int:
    repository = image_repository(args.template)
    if repository is None:
        print(f"prune-images: {args.template!r} names no per-commit image; nothing to prune")
        return 0
    proc = subprocess.run(["docker", "image", "ls", "--format", "{{json .}}", repository],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        print(f"::warning title=prune-images::docker image ls failed: "
              f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        return 0
    images = sorted((json.loads(x) for x in proc.stdout.splitlines() if x.strip()),
                    key=created, reverse=True)
    for image in images[args.keep:]:
        tag = image.get("Tag", "<none>")
        ref = f"{repository}:{tag}" if tag != "<none>" else image.get("ID", "")
        # One a container still uses stays (docker refuses): it goes on a later night.
        rm = subprocess.run(["docker", "image", "rm", ref], capture_output=True, text=True,
                            timeout=600, check=False)
        print(f"prune-images: {ref}: " + ("removed" if rm.returncode == 0 else
                                          f"kept ({rm.stderr.strip() or rm.returncode})"))
    print(f"prune-images: {min(len(images), args.keep)} newest of {len(images)} "
          f"{repository} image(s) kept")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_ci.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", default=os.environ.get("GITHUB_STEP_SUMMARY"),
                        help="job summary file (default: $GITHUB_STEP_SUMMARY)")
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("preflight", help="the hosts with an online runner")
    pre.add_argument("--hosts", required=True, help="JSON list of host profiles")
    pre.add_argument("--org", default="", help="read the organization's runners (runner "
                                               "groups) instead of the repository's")
    stat = sub.add_parser("statuses", help="each host's status; the red hosts")
    stat.add_argument("--downloaded", required=True, help="folder of night-<host> artifacts")
    stat.add_argument("--hosts", required=True, help="JSON list: hosts sent a night")
    stat.add_argument("--scheduled", required=True, help="JSON list: hosts scheduled")
    stat.add_argument("--continue-culprits", action="store_true",
                      help="every host sent gets a culprit job (dispatch run=culprit)")
    off = sub.add_parser("offer", help="the refreshed baselines and how to commit them")
    off.add_argument("--host", required=True)
    off.add_argument("--vllm-build", required=True)
    off.add_argument("--servers", type=int, default=1, help="server starts asked per baseline")
    off.add_argument("--baselines-dir", default="baselines")
    prune = sub.add_parser("prune-images", help="per-commit images but the newest --keep")
    prune.add_argument("--template", required=True, help="e.g. docker:rocm/vllm-ci:{sha}")
    prune.add_argument("--keep", type=int, default=8)
    args = parser.parse_args(argv)
    return {"preflight": preflight, "statuses": statuses, "offer": offer,
            "prune-images": prune_images}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
