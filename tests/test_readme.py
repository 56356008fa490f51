"""The README's examples are real: the one without pytest runs on the real engine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def example(heading: str) -> str:
    section = README.read_text().split(f"## {heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python example under '## {heading}'"
    return match.group(1)


def test_the_readme_is_an_on_ramp_of_about_200_lines() -> None:
    assert len(README.read_text().splitlines()) <= 220


@pytest.mark.engine
def test_the_example_without_pytest_runs_a_server_and_a_load(tmp_path: Path,
                                                             engine_python: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", example("Without pytest")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^\d+\.\d req/s$", proc.stdout, re.M), proc.stdout
    assert list((tmp_path / "example-results").glob("example__burst-*.json"))
    # Leaving the block stopped the server: nothing still runs in the example's folder.
    assert processes_in(tmp_path) == []


def processes_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve() == folder.resolve():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
