"""TEST DOUBLE that must never run: installed on PATH as a command (docker, pip, amd-smi,
...) that a code path promises not to call. It appends its name and arguments to
$TRIPWIRE_LOG and fails."""

from __future__ import annotations

import json
import os
import sys

with open(os.environ["TRIPWIRE_LOG"], "a") as fh:
    fh.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\n")
print(f"tripwire: {sys.argv[0]} must not run here", file=sys.stderr)
sys.exit(3)
