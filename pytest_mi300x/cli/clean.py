"""``pytest-mi300x clean``: stop what killed sessions left running (servers, containers)."""

from __future__ import annotations

import argparse
import configparser
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

INI_FILES = (("pytest.toml", "pytest"), (".pytest.toml", "pytest"), ("pytest.ini", "pytest"),
             (".pytest.ini", "pytest"), ("pyproject.toml", "tool.pytest.ini_options"),
             ("tox.ini", "pytest"), ("setup.cfg", "tool:pytest"))
"""Where pytest finds its ini, in its order, and the section it reads in each."""


class IniError(ValueError):
    """The ini file pytest would use cannot be read."""


def ini_engine_cache(start: Path) -> Path | None:
    """The ``engine_cache`` ini key of the ini file pytest would use when started in
    ``start`` (the first of INI_FILES with its section, there or in the nearest parent;
    a pytest.ini counts without one). ``clean`` runs outside pytest, so it looks itself."""
    for folder in (start, *start.parents):
        for name, section in INI_FILES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                if name.endswith(".toml"):
                    table: Any = tomllib.loads(path.read_text(encoding="utf-8"))
                    for part in section.split("."):
                        table = table.get(part) if isinstance(table, dict) else None
                    found = isinstance(table, dict)
                    value = table.get("engine_cache") if found else None
                else:
                    parser = configparser.ConfigParser(interpolation=None)
                    parser.read(path, encoding="utf-8")
                    found = parser.has_section(section)
                    value = parser.get(section, "engine_cache", fallback=None)
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError,
                    configparser.Error) as exc:
                raise IniError(f"{path}: cannot be read ({exc}); fix it, or pass "
                               "--engine-cache DIR") from None
            if found or name.endswith(".ini") and name != "tox.ini":
                return Path(str(value)).expanduser() if value else None
    return None


def run(args: argparse.Namespace) -> int:
    from pytest_mi300x.engines.cache import default_cache_dir
    from pytest_mi300x.engines.docker import DockerError, reap_orphans
    from pytest_mi300x.servers.records import PROBLEM, RecordsError, ServerRecords, alive

    try:
        cache = args.engine_cache or ini_engine_cache(Path.cwd()) or default_cache_dir()
        done = ServerRecords(cache / "servers").reap()
    except (RecordsError, IniError) as exc:
        print(f"pytest-mi300x clean: {exc}", file=sys.stderr)
        return 2
    unchecked = ""
    if shutil.which("docker") is not None:
        # Containers of ended sessions whose record is gone, found by their labels.
        try:
            done += reap_orphans(alive)
        except DockerError as exc:
            print(f"docker: could not list containers ({exc})", file=sys.stderr)
            unchecked = " (containers not checked)"
    problems = [line for line in done if line.startswith(PROBLEM)]
    for line in done:
        print(line, file=sys.stderr if line in problems else sys.stdout)
    if problems:
        print(f"{len(problems)} cleanup(s) failed: what they remove may still be there; "
              "remove it by hand", file=sys.stderr)
        return 1
    print(f"{len(done)} action(s); nothing left running by an ended session{unchecked}" if done
          else f"nothing left running by an ended session{unchecked}")
    return 0
