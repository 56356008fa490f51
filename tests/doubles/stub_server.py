"""TEST DOUBLE: a stub OpenAI-compatible completions server with known timing.

Not a model. It streams SSE chunks of made-up words on a fixed schedule (first
chunk after `ttft`, then one every `itl`), ends with a usage chunk and
`data: [DONE]` like vLLM, and serves word-level /tokenize and /detokenize.
It counts concurrent streams and records request bodies so tests can check
what the client sent.

Word-level tokenizer of the double: the word "w<N>" is id N, any other word is
id 1 (unk), id 0 is BOS, added when special tokens are requested. A prompt of
k words therefore has k + 1 prompt tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

STUB_MODEL = "stub-model"
STUB_VERSION = "0.0-stub"
BOS_ID = 0
UNK_ID = 1
FAIL_MARKER = "FAIL"  # prompt containing this word gets HTTP 500
CUT_MARKER = "CUT"  # prompt containing this word: connection dropped after first chunk
STALL_MARKER = "STALL"  # prompt containing this word: stream stops after its first chunk


def stub_token_ids(text: str, add_special_tokens: bool = True) -> list[int]:
    """The double's tokenization: whitespace words, "w<N>" -> N, else UNK."""
    ids = [BOS_ID] if add_special_tokens else []
    for word in text.split():
        if word.startswith("w") and word[1:].isdigit():
            ids.append(int(word[1:]))
        else:
            ids.append(UNK_ID)
    return ids


def stub_prompt(n_words: int, start: int = 2) -> str:
    """A prompt of `n_words` known words; it has n_words + 1 stub tokens (BOS)."""
    return " ".join(f"w{start + i}" for i in range(n_words))


# asyncio timers wake up to ~1 ms late (epoll's millisecond timeout): with few
# streams the stub yields in a loop for the last stretch instead, so its
# delays are exact to well under a millisecond; with many it only sleeps.
_PRECISE_STREAMS = 4
_SPIN_S = 0.002


async def _sleep_until(deadline: float, precise: bool) -> None:
    delay = deadline - time.perf_counter()
    if precise:
        if delay > _SPIN_S:
            await asyncio.sleep(delay - _SPIN_S)
        while time.perf_counter() < deadline:
            await asyncio.sleep(0)
    elif delay > 0:
        await asyncio.sleep(delay)


@dataclass(frozen=True)
class StubBehavior:
    """Timing and faults of the stub."""

    ttft: float = 0.05  # seconds from request to first chunk
    itl: float = 0.01  # seconds between chunks
    tokens_per_chunk: int = 1  # >1 mimics several tokens arriving in one chunk
    completion_tokens_delta: int = 0  # usage reports max_tokens + delta tokens
    prompt_tokens_delta: int = 0  # usage reports true prompt tokens + delta
    include_usage: bool = True  # False mimics a server that ignores stream_options
    vocab_size: int = 1000
    capacity: int | None = None  # streams served at once; more wait (a server queue)


@dataclass
class StubStats:
    """What the stub observed; read after the client is done."""

    requests: int = 0
    active: int = 0
    max_active: int = 0
    bodies: list[dict[str, object]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)


class StubServer:
    """TEST DOUBLE server on 127.0.0.1, run in a background thread with its own loop."""

    def __init__(self, behavior: StubBehavior | None = None) -> None:
        self.behavior = behavior or StubBehavior()
        self.stats = StubStats()
        self._lock = threading.Lock()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            if self.behavior.capacity is not None:
                self._slots = asyncio.Semaphore(self.behavior.capacity)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, sock=sock, backlog=256)
            )
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=serve, name="stub-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("stub server did not start within 10 s")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            loop = self._loop

            def shutdown() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.stop()

            loop.call_soon_threadsafe(shutdown)
            self._thread.join(10)

    def __enter__(self) -> StubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP --------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: serve requests until the client closes
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(length) if length else b""
                body = json.loads(raw) if raw else {}
                keep = await self._route(method, path, headers, body, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: dict[str, object],
        writer: asyncio.StreamWriter,
    ) -> bool:
        if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            chat = path.endswith("chat/completions")
            if self._slots is None:
                return await self._completions(headers, body, writer, chat)
            async with self._slots:  # service (and its TTFT clock) starts with a slot
                return await self._completions(headers, body, writer, chat)
        if method == "GET" and path == "/health":
            await self._json(writer, 200, {})
            return True
        if method == "GET" and path == "/v1/models":
            await self._json(writer, 200, {"object": "list", "data": [
                {"id": STUB_MODEL, "object": "model", "owned_by": "stub"}]})
            return True
        if method == "GET" and path == "/version":
            await self._json(writer, 200, {"version": STUB_VERSION})
            return True
        if method == "POST" and path == "/tokenize":
            with self._lock:
                self.stats.auth_headers.append(headers.get("authorization", ""))
            ids = stub_token_ids(str(body["prompt"]), bool(body.get("add_special_tokens", True)))
            await self._json(writer, 200, {"count": len(ids), "max_model_len": 4096, "tokens": ids})
            return True
        if method == "POST" and path == "/detokenize":
            tokens = body["tokens"]
            assert isinstance(tokens, list)
            words = ["<s>" if t == BOS_ID else f"w{t}" for t in tokens]
            await self._json(writer, 200, {"prompt": " ".join(words)})
            return True
        await self._json(writer, 404, {"error": {"message": f"no route {path}", "code": 404}})
        return True

    async def _json(self, writer: asyncio.StreamWriter, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    @staticmethod
    def _frame(body: dict[str, object], chat: bool, take: int, last: bool) -> bytes:
        """One token chunk as vLLM streams it, framed for chunked transfer encoding."""
        finish = "length" if last else None
        choice = ({"index": 0, "delta": {"content": " tok" * take}, "finish_reason": finish}
                  if chat else
                  {"index": 0, "text": " tok" * take, "logprobs": None,
                   "finish_reason": finish, "stop_reason": None})
        payload = json.dumps({"id": "cmpl-stub", "object": "text_completion", "created": 0,
                              "model": body.get("model"), "choices": [choice], "usage": None})
        data = f"data: {payload}\n\n".encode()
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    async def _chunk(self, writer: asyncio.StreamWriter, payload: str) -> None:
        data = f"data: {payload}\n\n".encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _completions(
        self, headers: dict[str, str], body: dict[str, object], writer: asyncio.StreamWriter,
        chat: bool = False,
    ) -> bool:
        start = time.perf_counter()
        b = self.behavior
        if chat:
            # Chat: the prompt is the user message; a role-only chunk opens the
            # stream at once, before the first token (as vLLM's does).
            messages = body.get("messages") or [{}]
            prompt = str(messages[-1].get("content", ""))  # type: ignore[index,union-attr]
        else:
            raw_prompt = body.get("prompt", "")
            if isinstance(raw_prompt, list):  # token ids, as vLLM takes them
                bad = [t for t in raw_prompt if not 0 <= int(t) < b.vocab_size]
                if bad:
                    await self._json(writer, 400, {"error": {
                        "message": f"Token id {bad[0]} is out of vocabulary", "code": 400}})
                    return True
                raw_prompt = " ".join(f"w{t}" for t in raw_prompt)
            prompt = str(raw_prompt)
        with self._lock:
            self.stats.requests += 1
            self.stats.bodies.append(body)
            self.stats.auth_headers.append(headers.get("authorization", ""))
        words = prompt.split()
        if FAIL_MARKER in words:
            await self._json(
                writer,
                500,
                {"error": {"message": "stub failure on request", "type": "Internal", "code": 500}},
            )
            return True
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens")  # type: ignore[call-overload]
                         or 16)
        n_tokens = max(1, max_tokens + b.completion_tokens_delta)
        prompt_tokens = len(stub_token_ids(prompt)) + b.prompt_tokens_delta
        with self._lock:
            self.stats.active += 1
            self.stats.max_active = max(self.stats.max_active, self.stats.active)
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            sent = 0
            n_chunk = 0
            if chat:
                await self._chunk(writer, json.dumps(
                    {"id": "chat-stub", "object": "chat.completion.chunk", "created": 0,
                     "model": body.get("model"), "choices": [
                         {"index": 0, "delta": {"role": "assistant", "content": ""},
                          "finish_reason": None}]}))
            frames: dict[tuple[int, bool], bytes] = {}  # the same chunk is built once
            while sent < n_tokens:
                # Absolute deadlines: gaps average exactly `itl` despite sleep jitter.
                deadline = start + b.ttft + n_chunk * b.itl
                await _sleep_until(deadline, precise=self.stats.active <= _PRECISE_STREAMS)
                take = min(b.tokens_per_chunk, n_tokens - sent)
                sent += take
                last = sent >= n_tokens
                frame = frames.get((take, last))
                if frame is None:
                    frame = frames[take, last] = self._frame(body, chat, take, last)
                writer.write(frame)
                await writer.drain()
                n_chunk += 1
                if CUT_MARKER in words:
                    writer.transport.abort()  # mid-stream drop, no [DONE]
                    return False
                if STALL_MARKER in words:
                    await asyncio.sleep(3600)  # a hung engine: the connection stays open
            stream_options = body.get("stream_options")
            wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage")
            if b.include_usage and wants_usage:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sent,
                         "total_tokens": prompt_tokens + sent}
                await self._chunk(writer, json.dumps(
                    {"id": "cmpl-stub", "object": "text_completion", "created": 0,
                     "model": body.get("model"), "choices": [], "usage": usage}))
            await self._chunk(writer, "[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        finally:
            with self._lock:
                self.stats.active -= 1


@contextlib.contextmanager
def stub_server(behavior: StubBehavior | None = None) -> Iterator[StubServer]:
    """Run a StubServer (TEST DOUBLE) for the duration of the block."""
    server = StubServer(behavior)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the TEST DOUBLE in its own process (benchmarks): prints its port, serves
    until SIGTERM or stdin closes."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="stub completions server (TEST DOUBLE)")
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.005)
    args = parser.parse_args(argv)
    with stub_server(StubBehavior(ttft=args.ttft, itl=args.itl)) as server:
        print(server.port, flush=True)
        sys.stdin.read()  # the parent closes stdin (or dies) to stop us


if __name__ == "__main__":
    main()
