"""Loopback networking for the control plane: free ports, and small blocking HTTP calls
(health, version, tokenize, model lists). Not the load path: that is load/client.py."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now.

    The engine binds it moments later; losing that race shows as a start failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def get_status(url: str, api_key: str | None = None, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, or None when nothing answers."""
    return _status(urllib.request.Request(url, headers=_auth(api_key)), timeout)


def status_of(method: str, url: str, api_key: str | None, timeout: float = 10.0) -> int | None:
    """HTTP status of a bodyless request (an empty JSON object for POST), or None when
    nothing answers."""
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **_auth(api_key)})
    return _status(req, timeout)


def _status(req: urllib.request.Request, timeout: float) -> int | None:
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


def post_json(url: str, payload: Any, api_key: str | None = None,
              timeout: float = 60.0) -> tuple[int, bytes]:
    """(status, body) of a JSON POST; an HTTP error status is returned, not raised."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **_auth(api_key)})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
