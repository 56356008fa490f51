"""Small blocking HTTP helpers for control-plane calls (health, version); not the load path."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def get_status(url: str, api_key: str | None = None, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, or None when nothing answers."""
    req = urllib.request.Request(url, headers=_auth(api_key))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def get_json(url: str, api_key: str | None = None, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(url, headers=_auth(api_key))
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
