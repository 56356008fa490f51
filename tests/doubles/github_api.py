"""TEST DOUBLE of the GitHub REST API's issues endpoints, on loopback: list open issues,
open one, comment on one. It records every request (method, path, body, whether the token
came in the Authorization header) for the test to read."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Api:
    url: str
    token: str
    issues: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str, bool]] = field(default_factory=list)


@contextmanager
def github_api(repository: str, token: str) -> Iterator[Api]:
    api = Api("", token)

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self, method: str) -> bool:
            ok = self.headers.get("Authorization") == f"Bearer {token}"
            api.requests.append((method, self.path, ok))
            if not ok:
                self._reply(401, {"message": "Bad credentials"})
            return ok

        def do_GET(self) -> None:  # noqa: N802
            if self._authorized("GET"):
                self._reply(200, [i for i in api.issues if i["state"] == "open"])

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized("POST"):
                return
            doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            base = f"/repos/{repository}/issues"
            if self.path == base:
                number = len(api.issues) + 1
                issue = {"number": number, "title": doc["title"], "body": doc["body"],
                         "labels": doc.get("labels", []), "state": "open",
                         "html_url": f"https://github.test/{repository}/issues/{number}"}
                api.issues.append(issue)
                self._reply(201, issue)
            elif self.path.startswith(base + "/") and self.path.endswith("/comments"):
                number = int(self.path.split("/")[-2])
                api.comments.setdefault(number, []).append(doc["body"])
                self._reply(201, {"id": 1})
            else:
                self._reply(404, {"message": "Not Found"})

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
