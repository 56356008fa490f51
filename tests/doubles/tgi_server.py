"""TEST DOUBLE: TGI's router as the harness meets it, in one stdlib-only process.

Not a model and not TGI. It speaks what TGI 3.3 speaks (router/src/server.rs, lib.rs):

- ``GET /health`` (200, empty), ``GET /info`` (model_id, version, sha, limits),
  ``GET /v1/models``, ``GET /metrics`` with ``tgi_*`` series (no TTFT series);
- ``POST /tokenize`` ``{"inputs": ...}``: a bare list of ``{id, text, start, stop}``
  with byte offsets, special tokens always added (the post-processor's BOS);
  ``POST /chat_tokenize``; no ``/detokenize`` (404);
- ``POST /v1/completions`` with string prompts: SSE events written ``data:{...}`` (no
  space, as axum writes them), the last token event carrying ``usage`` beside its
  ``choices``, then ``data:[DONE]``; unknown fields (``ignore_eos``,
  ``stream_options``) ignored, so about one request in three stops at EOS before
  ``max_tokens``; non-streaming answers for the accuracy check;
- more than ``--max-concurrent-requests`` (default 128) at once: HTTP 429
  ``{"error":"Model is overloaded","error_type":"overloaded"}``;
- ``--api-key`` / ``API_KEY``: generation and /tokenize without ``Authorization: Bearer
  KEY`` get 401; /health, /info, /metrics, /v1/models and /chat_tokenize stay open.

Tokenization is byte-level BPE from the model folder's own tokenizer.json (vocab and
merges, GPT-2's split approximated with ``re``), so prompt lengths come from the same
file the harness decodes with, as with a real TGI.

Run as ``text-generation-launcher`` (``python tgi_server.py --model-id DIR --port N
...``; ``--version`` prints a version). Knobs from the environment:
TGI_DOUBLE_TTFT / TGI_DOUBLE_ITL (seconds), TGI_DOUBLE_ANSWERS (``right`` or ``wrong``)
with TGI_DOUBLE_ANSWER_KEY (a JSON Lines file of ``{"question", "answers"}``), and
TGI_DOUBLE_JOURNAL (a file the argv and selected env are appended to).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

VERSION = "3.3.6-dev0"
SHA = "db931fcf0c1a9d1b2f6c8e3a5b7d9f0e1a2b3c4d"
# GPT-2's split, with \p{L} and \p{N} spelled for `re` (the double's approximation).
_SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
_QUESTION = re.compile(r"Q: (.*)\nA:\s*$")
# Only these need the API key (server.rs: base_routes); /info, /health, /metrics,
# /chat_tokenize and /v1/models answer anyone.
_GUARDED = frozenset({"/", "/generate", "/generate_stream", "/v1/chat/completions",
                      "/v1/completions", "/vertex", "/invocations", "/tokenize"})


def _bytes_to_unicode() -> dict[int, str]:
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


class DoubleTokenizer:
    """Byte-level BPE encoding from tokenizer.json: (id, byte start, byte stop) per token."""

    def __init__(self, model_dir: Path) -> None:
        data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        model = data["model"]
        self.vocab: dict[str, int] = model["vocab"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))
                  for m in model["merges"]]
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_chars = _bytes_to_unicode()
        added = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
        self.bos: list[int] = []
        post = data.get("post_processor") or {}
        for piece in post.get("single", []) if post.get("type") == "TemplateProcessing" else []:
            if "SpecialToken" in piece:
                self.bos.append(added[piece["SpecialToken"]["id"]])
            else:
                break
        self.eos = added.get("</s>", max(self.vocab.values()))
        self._cache: dict[str, list[str]] = {}

    def _bpe(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i)
                     for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[tuple[int, int, int]]:
        out = [(b, 0, 0) for b in self.bos]
        for match in _SPLIT.finditer(text):
            start = len(text[:match.start()].encode("utf-8"))
            raw = match.group().encode("utf-8")
            for piece in self._bpe("".join(self.byte_chars[b] for b in raw)):
                out.append((self.vocab[piece], start, start + len(piece)))
                start += len(piece)
        return out


@dataclass
class DoubleStats:
    requests: int = 0
    success: int = 0
    active: int = 0
    waiting: int = 0
    rejected: int = 0
    queue_s: float = 0.0
    generated: int = 0
    bodies: list[dict[str, object]] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    model_id: str
    port: int = 0
    max_concurrent_requests: int = 128
    batch_slots: int = 64
    api_key: str = ""
    ttft: float = 0.02
    itl: float = 0.004
    answers: str = "right"
    answer_key: dict[str, str] = field(default_factory=dict)


class TGIDouble:
    """TEST DOUBLE server on 127.0.0.1: in a thread (``start``) or the main thread
    (``serve_forever``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokenizer = DoubleTokenizer(Path(settings.model_id))
        self.stats = DoubleStats()
        self.port = settings.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, sock: socket.socket, ready: threading.Event | None) -> None:
        self._slots = asyncio.Semaphore(self.settings.batch_slots)
        server = await asyncio.start_server(self._handle, sock=sock, backlog=1024)
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        return sock

    def serve_forever(self) -> None:
        sock = self._socket()
        loop = asyncio.new_event_loop()
        self._loop = loop
        task = loop.create_task(self._serve(sock, None))
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    def start(self) -> None:
        sock = self._socket()
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            task = loop.create_task(self._serve(sock, ready))
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)

        self._thread = threading.Thread(target=run, name="tgi-double", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("TGI double did not start within 10 s")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            loop = self._loop
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
            self._thread.join(10)

    def __enter__(self) -> TGIDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (line.split(":", 1) for line in lines[1:] if ":" in line)}
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(length) if length else b""
                body = json.loads(raw) if raw else {}
                await self._route(method, path, headers, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _send(self, writer: asyncio.StreamWriter, status: int, payload: object,
                    content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()

    async def _route(self, method: str, path: str, headers: dict[str, str],
                     body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        key = self.settings.api_key
        if (key and path in _GUARDED
                and headers.get("authorization", "").lower() != f"bearer {key}".lower()):
            await self._send(writer, 401, b"")  # axum's bare status, no body
            return
        if method == "GET" and path in ("/health", "/ping"):
            await self._send(writer, 200, b"")
        elif method == "GET" and path == "/info":
            await self._send(writer, 200, self._info())
        elif method == "GET" and path == "/v1/models":
            await self._send(writer, 200, {"object": "list", "data": [
                {"id": self.settings.model_id, "object": "model", "created": 0,
                 "owned_by": self.settings.model_id}]})
        elif method == "GET" and path == "/metrics":
            await self._send(writer, 200, self._metrics().encode(), "text/plain")
        elif method == "POST" and path == "/tokenize":
            text = str(body["inputs"])
            data = text.encode("utf-8")
            await self._send(writer, 200, [
                {"id": i, "text": data[a:b].decode("utf-8", "replace"), "start": a, "stop": b}
                for i, a, b in self.tokenizer.encode(text)])
        elif method == "POST" and path == "/chat_tokenize":
            messages = body.get("messages") or []
            text = "".join(f"<|{m['role']}|>\n{m['content']}</s>\n"  # type: ignore[index]
                           for m in messages) + "<|assistant|>\n"  # type: ignore[union-attr]
            tokens = [{"id": i, "text": "", "start": a, "stop": b}
                      for i, a, b in self.tokenizer.encode(text)]
            await self._send(writer, 200, {"tokenize_response": tokens, "templated_text": text})
        elif method == "POST" and path == "/v1/completions":
            await self._completions(body, writer)
        else:
            await self._send(writer, 404, {"error": f"no route {path}"})

    def _info(self) -> dict[str, object]:
        return {"model_id": self.settings.model_id, "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": self.settings.max_concurrent_requests,
                "max_best_of": 2, "max_stop_sequences": 4, "max_input_tokens": 4095,
                "max_total_tokens": 4096, "validation_workers": 2, "max_client_batch_size": 4,
                "router": "text-generation-router", "version": VERSION, "sha": SHA,
                "docker_label": None}

    def _metrics(self) -> str:
        s = self.stats
        return "\n".join([
            "# TYPE tgi_request_count counter", f"tgi_request_count {s.requests}",
            "# TYPE tgi_request_success counter", f"tgi_request_success {s.success}",
            "# TYPE tgi_request_queue_duration histogram",
            f'tgi_request_queue_duration_bucket{{le="+Inf"}} {s.success}',
            f"tgi_request_queue_duration_sum {s.queue_s}",
            f"tgi_request_queue_duration_count {s.success}",
            "# TYPE tgi_request_generated_tokens histogram",
            f'tgi_request_generated_tokens_bucket{{le="+Inf"}} {s.success}',
            f"tgi_request_generated_tokens_sum {s.generated}",
            f"tgi_request_generated_tokens_count {s.success}",
            "# TYPE tgi_batch_current_size gauge", f"tgi_batch_current_size {s.active}",
            "# TYPE tgi_queue_size gauge", f"tgi_queue_size {s.waiting}", ""])

    def _answer(self, prompt: str) -> str:
        match = _QUESTION.search(prompt)
        right = self.settings.answer_key.get(match.group(1).strip(), "") if match else ""
        return f" {right}" if self.settings.answers == "right" else " I do not know"

    async def _completions(self, body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):  # TGI takes strings (or a list of them), not ids
            await self._send(writer, 422, {"error": "prompt must be a string",
                                           "error_type": "validation"})
            return
        s = self.stats
        s.requests += 1
        s.bodies.append(body)
        if s.active + s.waiting >= self.settings.max_concurrent_requests:
            s.rejected += 1
            await self._send(writer, 429, {"error": "Model is overloaded",
                                           "error_type": "overloaded"})
            return
        prompt_tokens = len(self.tokenizer.encode(prompt))
        max_tokens = int(body.get("max_tokens") or 100)  # type: ignore[call-overload]
        queued = time.perf_counter()
        s.waiting += 1
        assert self._slots is not None
        async with self._slots:
            s.waiting -= 1
            s.active += 1
            s.queue_s += time.perf_counter() - queued
            try:
                if not body.get("stream"):
                    await self._answer_once(body, prompt, prompt_tokens, writer)
                else:
                    await self._stream(body, prompt, prompt_tokens, max_tokens, writer)
            finally:
                s.active -= 1

    async def _answer_once(self, body: dict[str, object], prompt: str, prompt_tokens: int,
                           writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.settings.ttft)
        text = self._answer(prompt)
        completion = max(1, len(self.tokenizer.encode(text)) - len(self.tokenizer.bos))
        self.stats.success += 1
        self.stats.generated += completion
        await self._send(writer, 200, {
            "object": "text_completion", "id": "", "created": int(time.time()),
            "model": self.settings.model_id, "system_fingerprint": f"{VERSION}-native",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion}})

    async def _stream(self, body: dict[str, object], prompt: str, prompt_tokens: int,
                      max_tokens: int, writer: asyncio.StreamWriter) -> None:
        # TGI ignores ignore_eos: a third of the prompts meet EOS at a third to two
        # thirds of max_tokens (fixed per prompt, so repetitions agree).
        h = zlib.crc32(prompt.encode())
        n = max(1, max_tokens * (1 + h % 2) // 3) if h % 3 == 0 else max_tokens
        finish = "eos_token" if n < max_tokens else "length"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        start = time.perf_counter()
        common = {"id": "", "model": self.settings.model_id,
                  "system_fingerprint": f"{VERSION}-native"}
        for k in range(n):
            deadline = start + self.settings.ttft + k * self.settings.itl
            delay = deadline - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            last = k == n - 1
            choice = {"index": 0, "text": "" if last and finish == "eos_token" else " tok",
                      "logprobs": None, "finish_reason": finish if last else ""}
            event: dict[str, object] = {"object": "text_completion", **common,
                                        "created": int(time.time()), "choices": [choice]}
            if last:
                event["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                  "total_tokens": prompt_tokens + n}
            data = b"data:" + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        done = b"data:[DONE]\n\n"
        writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
        await writer.drain()
        self.stats.success += 1
        self.stats.generated += n


def read_answer_key(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return {str(i["question"]).strip(): str(i["answers"][0]) for i in items}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args:
        print(f"text-generation-launcher {VERSION}")
        return 0
    journal = os.environ.get("TGI_DOUBLE_JOURNAL")
    if journal:
        with open(journal, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"argv": args, "pid": os.getpid(), "env": {
                k: v for k, v in os.environ.items()
                if k.startswith(("ROCM_", "TRUST_", "CUDA_", "HIP_", "ROCR_"))}}) + "\n")
    parser = argparse.ArgumentParser(prog="text-generation-launcher")
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--max-concurrent-requests", type=int, default=128)
    parser.add_argument("--api-key", default=os.environ.get("API_KEY", ""))
    known, _ = parser.parse_known_args(args)
    env = os.environ
    settings = Settings(model_id=known.model_id, port=known.port,
                        max_concurrent_requests=known.max_concurrent_requests,
                        api_key=known.api_key,
                        ttft=float(env.get("TGI_DOUBLE_TTFT", "0.02")),
                        itl=float(env.get("TGI_DOUBLE_ITL", "0.004")),
                        answers=env.get("TGI_DOUBLE_ANSWERS", "right"),
                        answer_key=read_answer_key(env.get("TGI_DOUBLE_ANSWER_KEY")))
    print(f"text-generation-launcher {VERSION} (TEST DOUBLE) serving {known.model_id} on "
          f"127.0.0.1:{known.port}", flush=True)
    TGIDouble(settings).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
