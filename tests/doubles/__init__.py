"""Test doubles: stand-ins for engines, GPU tools and docker. Each module says what it
imitates and how far; ``install_command`` puts a command double on PATH."""

from __future__ import annotations

import sys
from pathlib import Path

DOUBLES = Path(__file__).parent


def install_command(bin_dir: Path, command: str, script: str) -> Path:
    """An executable ``bin_dir/command`` that runs the double ``script`` (a file here)
    with this interpreter; put ``bin_dir`` first on PATH to use it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    tool = bin_dir / command
    tool.write_text(f"#!{sys.executable}\nimport runpy, sys\n"
                    f"sys.path.insert(0, {str(DOUBLES)!r})\n"
                    f"runpy.run_path({str(DOUBLES / script)!r}, run_name='__main__')\n")
    tool.chmod(0o755)
    return tool
