"""Result files: one JSON document per test, written atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = "pytest-mi300x/result/1"


def result_path(results_dir: Path, nodeid: str) -> Path:
    """A file name that is readable and unique per test id."""
    name = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", nodeid.replace("::", "__")).strip("_")
    return results_dir / f"{name[:180]}.json"


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(document, fh, indent=1, sort_keys=True, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every result document in a folder, by test id."""
    docs = []
    for path in sorted(results_dir.glob("*.json")):
        doc = json.loads(path.read_text())
        if doc.get("schema") == SCHEMA:
            docs.append(doc)
    return docs
