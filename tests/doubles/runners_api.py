"""TEST DOUBLE for GitHub's self-hosted runners API (`GET /repos/{owner}/{repo}/actions/runners`
and `/orgs/{org}/actions/runners`): a local HTTP server answering in its shape (total_count,
runners with name, status, busy and labels), 100 a page, recording each request's path and
Authorization header. `status` other than 200 answers as GitHub does for a token without
access."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def runner(i: int, host: str, status: str) -> dict[str, Any]:
    """One runner as the API lists it, labelled for ``host`` (label case as registered)."""
    labels = ["self-hosted", "Linux", "X64", "rocm", f"GPU-{host}"]
    return {"id": i, "name": f"runner-{i}", "os": "Linux", "status": status, "busy": False,
            "labels": [{"id": n, "name": name, "type": "read-only" if n < 3 else "custom"}
                       for n, name in enumerate(labels)]}


class RunnersApi:
    def __init__(self) -> None:
        self.runners: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str | None]] = []
        self.status = 200
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                api.requests.append((self.path, self.headers.get("Authorization")))
                page = int(parse_qs(urlsplit(self.path).query).get("page", ["1"])[0])
                doc: dict[str, Any] = {"total_count": len(api.runners),
                                       "runners": api.runners[(page - 1) * 100:page * 100]}
                if api.status != 200:
                    doc = {"message": "Resource not accessible by integration"}
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(doc).encode())

            def log_message(self, *args: Any) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> RunnersApi:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
