"""amd-smi's per-GPU records in either of its output forms: ``--json`` (a list, or
``{"gpu_data": [...]}``) and the plain form (``GPU: 0`` then indented ``KEY: value`` lines),
which amd-smi prints from the same tree with its keys upper-cased. Both give the same dicts
(keys lower-cased, leaves as printed), so a parser written for one reads the other; the
tests read real plain outputs from amd-smi's own changelog and users' threads."""

from __future__ import annotations

import re
from typing import Any

from pytest_mi300x.gpus.smi import GpuToolError, amd_smi_records

_GPU_LINE = re.compile(r"^GPU:\s*(\d+)\s*$")
_ENTRY = re.compile(r"^(\s*)([A-Za-z0-9_ ./%()-]+?):(?:\s+(.*?))?\s*$")


def plain_records(text: str) -> list[dict[str, Any]]:
    """Records of amd-smi's plain output, one per ``GPU: N`` block, with ``gpu`` set."""
    records: list[dict[str, Any]] = []
    stack: list[tuple[int, dict[str, Any]]] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        head = _GPU_LINE.match(raw.strip()) if not raw[:1].isspace() else None
        if head:
            record: dict[str, Any] = {"gpu": int(head.group(1))}
            records.append(record)
            stack = [(-1, record)]
            continue
        match = _ENTRY.match(raw)
        if not match or not stack:
            continue
        indent, key, value = len(match.group(1)), match.group(2).strip().lower(), match.group(3)
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value is None or value == "":
            child: dict[str, Any] = {}
            parent[key] = child
            stack.append((indent, child))
        else:
            parent[key] = value
    return records


def records(text: str) -> list[dict[str, Any]]:
    """Per-GPU records of any amd-smi output (JSON or plain)."""
    try:
        return amd_smi_records(text)
    except GpuToolError:
        if re.search(r"^GPU:\s*\d+\s*$", text, re.MULTILINE):
            return plain_records(text)
        raise


def find(tree: Any, *keys: str) -> Any:
    """The first value under any of ``keys``, searched depth first; None if absent or
    "N/A" (what amd-smi prints for a value it cannot read)."""
    if not isinstance(tree, dict):
        return None
    for key in keys:
        value = tree.get(key)
        if value is not None and value != "N/A" and not isinstance(value, dict):
            return value
    for value in tree.values():
        found = find(value, *keys)
        if found is not None:
            return found
    return None


def text_of(value: Any) -> str | None:
    """A leaf as text: ``{"value": 750, "unit": "W"}`` -> "750 W"; None for N/A."""
    if isinstance(value, dict):
        inner = value.get("value")
        if inner is None or inner == "N/A":
            return None
        return f"{inner} {value.get('unit', '')}".strip()
    if value is None or value == "N/A":
        return None
    return str(value).strip() or None


def parse_version(text: str) -> dict[str, str]:
    """``amd-smi version``: "AMDSMI Tool: ... | ROCm version: 6.4.0 | amdgpu version: ..."
    as {"tool", "library", "rocm", "amdgpu"} (absent or N/A parts left out)."""
    names = {"amdsmi tool": "tool", "amdsmi library version": "library",
             "rocm version": "rocm", "amdgpu version": "amdgpu"}
    found = {}
    for part in text.strip().splitlines()[-1:][0].split("|") if text.strip() else []:
        key, _, value = part.partition(":")
        name = names.get(key.strip().lower())
        if name and value.strip() and value.strip() != "N/A":
            found[name] = value.strip()
    return found
