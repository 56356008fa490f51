"""TEST DOUBLE of a package index (the simple repository API) for the night's pypi stream:
a PEP 503 folder of HTML pages read through a ``file://`` index URL, and a PEP 691 JSON
index served on loopback. Point pip's configuration at it (``PIP_CONFIG_FILE`` to an empty
file, ``PIP_INDEX_URL``), as a user's mirror would be."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class File:
    filename: str
    sha256: str = ""
    yanked: bool = False


def write_html_index(root: Path, project: str, files: list[File]) -> str:
    """``root/<project>/index.html`` as PEP 503 has it; the index URL (file://)."""
    page = root / project
    page.mkdir(parents=True, exist_ok=True)
    links = []
    for f in files:
        fragment = f"#sha256={f.sha256}" if f.sha256 else ""
        yanked = ' data-yanked=""' if f.yanked else ""
        links.append(f'<a href="../../files/{f.filename}{fragment}"{yanked}>{f.filename}</a>')
    (page / "index.html").write_text("<html><body>" + "<br>".join(links) + "</body></html>")
    return root.as_uri()


@contextmanager
def json_index(project: str, files: list[File]) -> Iterator[tuple[str, list[str]]]:
    """A PEP 691 JSON index on loopback: (its URL, the paths asked for)."""
    asked: list[str] = []
    doc = {"meta": {"api-version": "1.1"}, "name": project,
           "files": [{"filename": f.filename, "url": f"/files/{f.filename}",
                      "hashes": {"sha256": f.sha256} if f.sha256 else {},
                      "yanked": f.yanked} for f in files]}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            asked.append(self.path)
            if self.path.rstrip("/") != f"/simple/{project}":
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", asked
    finally:
        server.shutdown()
        server.server_close()
