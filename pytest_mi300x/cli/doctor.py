"""``pytest-mi300x doctor --gpu-host H``: is this host fit to measure on? One line per
check with its fix; exit 0 when none failed, 1 when one did, 2 on bad usage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_mi300x.config import DEFAULT_VLLM_BUILD

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pytest-mi300x doctor",
        description="Check a host before measuring on it: GPU count and arch, partition "
                    "modes, NUMA balancing, power cap / perf level, driver/ROCm/firmware, "
                    "GPU numbering, the engine build's flags and env, /dev/kfd in docker, "
                    "free disk. Exit 0: fit; 1: a check failed; 2: bad usage.")
    p.add_argument("--gpu-host", default="cpu", help="host profile (default: cpu)")
    p.add_argument("--hosts-file", type=Path, default=None,
                   help="host profiles (default: ./hosts.toml when present)")
    p.add_argument("--vllm-build", default=None,
                   help="the build to check (docker:IMAGE or a venv path; on the cpu host "
                        f"default {DEFAULT_VLLM_BUILD}, as provisioned)")
    p.add_argument("--engine-cache", type=Path, default=None,
                   help="the engine cache (cpu host; default $PYTEST_MI300X_CACHE or "
                        "~/.cache/pytest-mi300x)")
    p.add_argument("--only", action="append", default=None, metavar="CHECK",
                   help="run only this check (repeatable): gpus, partitions, numa_balancing, "
                        "power, identity, numbering, image, kfd, disk")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the checks as JSON")
    return p


def run(argv: list[str]) -> int:
    from pytest_mi300x.doctor import Tools, describe, run_checks
    from pytest_mi300x.hosts.profile import HostConfigError
    from pytest_mi300x.hosts.toml import select_host
    from pytest_mi300x.results.files import write_json_atomic

    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage line
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    hosts_file = args.hosts_file
    if hosts_file is None and Path("hosts.toml").exists():
        hosts_file = Path("hosts.toml")
    elif hosts_file is not None and not hosts_file.exists():
        print(f"pytest-mi300x doctor: --hosts-file {hosts_file} does not exist; give the "
              "path of a hosts.toml", file=sys.stderr)
        return EXIT_USAGE
    try:
        host = select_host(args.gpu_host, hosts_file)
    except HostConfigError as exc:
        print(f"pytest-mi300x doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    build = args.vllm_build or (None if host.has_gpus else DEFAULT_VLLM_BUILD)
    checks = run_checks(host, build, tools=Tools(cache_dir=args.engine_cache), only=args.only)
    for check in checks:
        print(check.line)
    failed = [c for c in checks if c.failed]
    print(f"doctor: host {host.name}: {len(checks) - len(failed)} of {len(checks)} checks "
          f"passed or do not apply; {len(failed)} failed")
    if args.json is not None:
        write_json_atomic(args.json, {"host": host.name, "build": build, **describe(checks)})
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
