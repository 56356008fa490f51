"""Test double for server lifecycle mechanics: a process that becomes ready, crashes or
ignores SIGTERM on request. It measures the harness, never an engine.

At start it prints the values of its *_TOKEN env vars, as an engine that logs its settings
would: what a session must hide in the log it leaves.

usage: python lifecycle_server.py MODE PORT [DELAY] [--flag [VALUE] | --no-flag ...]
  ($LIFECYCLE_DOUBLE_REPORT: a settings line it prints as vLLM reports its config, what it
  runs with when no flag says otherwise; flags given override it, as vLLM's report does;
  $LIFECYCLE_DOUBLE_FORCE: settings it runs with whatever the flags say, as a build that
  forces one back)
  serve        wait DELAY s, then answer 200 on /health; also spawns a child
  crash        print an engine-like error line and exit 3 after DELAY s
  stubborn     like serve, but ignores SIGTERM
  refuse       print vLLM's CPU refusal of fp8 KV cache and exit 1
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import time


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b'{"version": "0.0-double"}'
        key = os.environ.get("VLLM_API_KEY")
        if self.path.startswith("/v1/") and key and \
                self.headers.get("Authorization") != f"Bearer {key}":
            # As vLLM does with an API key set: the /v1 routes refuse any other key.
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/v1/models":
            body = (b'{"object": "list", "data": [{"id": "m", "object": "model", '
                    b'"created": 0, "owned_by": "double"}]}')
        self.send_response(200 if self.path in ("/health", "/version", "/v1/models") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def settings(text: str) -> dict[str, str]:
    pairs = (item.strip().partition("=") for item in text.split(",") if "=" in item)
    return {k: v for k, _, v in pairs}


def given(rest: list[str]) -> dict[str, str]:
    """The --flags on its command line as vLLM's report names them."""
    out, i = {}, 0
    while i < len(rest):
        arg = rest[i]
        if arg.startswith("--no-"):
            out[arg[5:].replace("-", "_")] = "False"
        elif arg.startswith("--"):
            if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                out[arg[2:].replace("-", "_")] = rest[i + 1]
                i += 1
            else:
                out[arg[2:].replace("-", "_")] = "True"
        i += 1
    return out


def main() -> None:
    mode, port, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    delay = float(rest.pop(0)) if rest and not rest[0].startswith("--") else 0.0
    print(f"double starting mode={mode}", flush=True)
    for name in sorted(k for k in os.environ if k.endswith("_TOKEN")):
        print(f"setting {name.lower()} = {os.environ[name]}", flush=True)
    report = os.environ.get("LIFECYCLE_DOUBLE_REPORT")
    if report:  # what it "runs with", in the shape of vLLM's engine core start-up line
        runs = {**settings(report), **given(rest),
                **settings(os.environ.get("LIFECYCLE_DOUBLE_FORCE", ""))}
        line = ", ".join(f"{k}={v}" for k, v in runs.items())
        print(f"INFO Initializing a V1 LLM engine (v0.0-double) with config: {line}",
              flush=True)
    time.sleep(delay)
    if mode == "crash":
        print("Traceback (most recent call last):", flush=True)
        print("ValueError: simulated engine failure", flush=True)
        sys.exit(3)
    if mode == "refuse":
        print("ValueError: FP8 KV cache on CPU requires x86 with AVX-512 or AMX", flush=True)
        sys.exit(1)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"child pid {child.pid}", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()


if __name__ == "__main__":
    main()
