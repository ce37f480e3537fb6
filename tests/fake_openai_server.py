"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1, for judge and cascade tests.

A real HTTP server (stdlib, one thread per request) on a free port, so the code under test
talks through the real `openai` client and its real HTTP stack:

    with FakeOpenAIServer(reply="Score: 4") as server:
        server.push({"status": 429}, {"status": 500}, {"delay": 2.0}, {"content": "Score: 5"})
        ... JudgeSettings(model="fake", base_url=server.url) ...
        ... Cascade(llm_backend="openai", llm_model="fake", base_url=server.url) ...
        server.requests  # every request received: {"path", "headers" (lower-case names), "json"}

A request with ``"stream": true`` (ivbench always streams) is answered with server-sent
``chat.completion.chunk`` events, one word (with its leading space, see `pieces`) per event,
a last chunk with the usage where ``stream_options.include_usage`` asks for it, then
``data: [DONE]``; any other request gets one ordinary ``chat.completion`` with usage.

Like a real server it notices a client that has gone (a write fails) and stops generating
that reply: `aborted` counts them, `words_sent` counts every word written. With
``serial=True`` it generates one reply at a time, as llama.cpp's server with one slot: the
others wait, silently, and `max_generating` stays 1. ``models=[...]`` lists model names at
``GET /v1/models`` (by default that route is a 404, as on servers without it); GET requests
are in `gets`, not in `requests`. ``keep_alive=True`` speaks HTTP/1.1 and keeps connections
open (`connections` counts those accepted). `closed_port()` gives a port nothing listens on.

Each request takes the next scripted action, or the defaults when none is left. An action
is a dict:

- ``{"status": 429}``: that HTTP status with an OpenAI-style error body (optional ``headers``;
  ``"body"``: another body instead, a dict sent as JSON or a str sent as plain text);
- ``{"delay": 2.0}``: wait that long before answering (past the client's timeout, the
  client has gone and the answer is dropped); combine with any other key;
- ``{"content": "Score: 4"}`` or ``{"contents": ["Score: 4", "Score: 5"]}``: the reply text
  (one per choice; ``content`` is repeated for each of the request's ``n`` choices, and may
  be a function of the request's JSON returning the text);
- ``{"n_choices": 1}``: answer with that many choices whatever ``n`` the request asked for
  (as llama.cpp and Ollama do);
- ``{"usage": {"prompt_tokens": 10, "completion_tokens": 3}}``: the usage to report in a
  non-streamed answer (default: whitespace-separated words of the messages and of the replies);
- ``{"token_delay": 0.05}``: seconds between streamed events (default: the server's
  ``token_delay``, 0);
- ``{"stall": 2.0, "stall_after": 3}``: in a streamed reply, fall silent that long after
  that many words (a server that hangs mid-reply);
- ``{"finish_reason": "length"}``: how the reply ends (default "stop"), e.g. cut at max_tokens;
- ``{"fail_after": 2, "error": {...}}``: after that many streamed words, an error event and
  the end of the stream;
- ``{"no_usage": True}``: a stream without the usage chunk (a server that reports no tokens).

The default reply may be a string or a function of the request's JSON returning one.
"""
from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Union
from collections.abc import Callable, Iterator

Reply = Union[str, Callable[[dict[str, Any]], str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping out a delay must not hold up stop()
    allow_reuse_address = True


def pieces(text: str) -> list[str]:
    """How the server splits a streamed reply into tokens: words with their leading space."""
    return re.findall(r"\s*\S+", text)


def _closed(connection: socket.socket) -> bool:
    """Whether the client has closed its side (readable, with nothing to read)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a connection to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeOpenAIServer:
    def __init__(self, reply: Reply = "Score: 4", token_delay: float = 0.0, *, serial: bool = False,
                 models: Optional[list[str]] = None, keep_alive: bool = False) -> None:
        self.reply = reply
        self.token_delay = token_delay
        self.serial = serial
        self.models = models
        self.keep_alive = keep_alive
        self.connections = 0  # TCP connections accepted
        self._sockets: list[socket.socket] = []
        self.requests: list[dict[str, Any]] = []
        self.gets: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.generating = 0
        self.max_generating = 0
        self.words_sent = 0
        self.aborted = 0
        self._slot = threading.Lock()  # serial mode: the one slot
        self._actions: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread: Optional[threading.Thread] = None

    # -- control ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *actions: dict[str, Any]) -> None:
        with self._lock:
            self._actions.extend(actions)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._actions)

    def drop_connections(self) -> None:
        """Closes every connection the server holds, as a server does with idle ones."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------

    def _next_action(self) -> dict[str, Any]:
        with self._lock:
            return self._actions.popleft() if self._actions else {}

    def _wait_for_slot(self, connection: socket.socket) -> bool:
        """Serial mode: waits for the one slot; False when the client left while it waited (as
        llama.cpp drops a queued request whose connection has closed)."""
        while not self._slot.acquire(timeout=0.02):
            if _closed(connection):
                return False
        return True

    @contextlib.contextmanager
    def _generating(self, connection: socket.socket) -> Iterator[bool]:
        """One reply being generated (in serial mode, the only one); yields False when the
        client left before its turn came."""
        if self.serial and not self._wait_for_slot(connection):
            self._count(aborted=1)
            yield False
            return
        try:
            with self._lock:
                self.generating += 1
                self.max_generating = max(self.max_generating, self.generating)
            yield True
        finally:
            with self._lock:
                self.generating -= 1
            if self.serial:
                self._slot.release()

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def _respond(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any, dict[str, Any]]:
        """(status, headers, payload, action): the payload is an error body or a whole
        `chat.completion`; a streamed request is sent from the latter's choices."""
        action = self._next_action()
        if action.get("delay"):
            time.sleep(float(action["delay"]))
        status = int(action.get("status", 200))
        headers = dict(action.get("headers") or {})
        if status != 200:
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            body = action.get("body", {"error": {"message": f"scripted HTTP {status}", "type": kind,
                                                 "param": None, "code": kind}})
            return status, headers, body, action
        n = int(action.get("n_choices", body.get("n") or 1))
        if "contents" in action:
            contents = [str(c) for c in list(action["contents"])[:n]]
        else:
            content = action.get("content", self.reply)
            contents = [str(content(body) if callable(content) else content) for _ in range(n)]
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        usage = action.get("usage") or {"prompt_tokens": prompt_words,
                                        "completion_tokens": sum(len(c.split()) for c in contents)}
        usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        return 200, headers, {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": c},
                         "finish_reason": action.get("finish_reason", "stop"), "logprobs": None}
                        for i, c in enumerate(contents)],
            "usage": usage,
        }, action

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: the connection closes after each answer. HTTP/1.1 (keep_alive): it stays
            # open for the next request, and a stream is sent in chunked encoding.
            protocol_version = "HTTP/1.1" if server.keep_alive else "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1
                    server._sockets.append(self.connection)

            def _write(self, data: bytes) -> None:
                if server.keep_alive:
                    data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
                self.wfile.write(data)
                self.wfile.flush()

            def _send(self, status: int, headers: dict[str, str], payload: Any) -> None:
                plain = isinstance(payload, str)
                data = (payload if plain else json.dumps(payload)).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if plain else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, str(value))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, headers: dict[str, str], completion: dict[str, Any], action: dict[str, Any],
                        request: dict[str, Any]) -> None:
                delay = float(action.get("token_delay", server.token_delay))
                stall_after = action.get("stall_after") if action.get("stall") else None
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                if server.keep_alive:
                    self.send_header("Transfer-Encoding", "chunked")
                for key, value in headers.items():
                    self.send_header(key, str(value))
                self.end_headers()
                base = {key: completion[key] for key in ("id", "created", "model")}
                base["object"] = "chat.completion.chunk"

                def send(index: int, delta: dict[str, Any], finish: Optional[str] = None) -> None:
                    if _closed(self.connection):  # checked before each token, as llama.cpp does
                        raise BrokenPipeError("the client has gone")
                    event = {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish,
                                                  "logprobs": None}]}
                    self._write(f"data: {json.dumps(event)}\n\n".encode())

                for choice in completion["choices"]:
                    index = choice["index"]
                    send(index, {"role": "assistant", "content": ""})
                    for i, piece in enumerate(pieces(choice["message"]["content"])):
                        if i == action.get("fail_after"):  # as llama.cpp reports a failure mid-reply
                            self._write(f"data: {json.dumps({'error': action['error']})}\n\n".encode())
                            return
                        if i == stall_after:
                            time.sleep(float(action["stall"]))
                        if delay:
                            time.sleep(delay)
                        send(index, {"content": piece})
                        server._count(words_sent=1)
                    send(index, {}, choice["finish_reason"])
                if (request.get("stream_options") or {}).get("include_usage") and not action.get("no_usage"):
                    event = {**base, "choices": [], "usage": completion["usage"]}
                    self._write(f"data: {json.dumps(event)}\n\n".encode())
                self._write(b"data: [DONE]\n\n")
                if server.keep_alive:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()

            def do_GET(self) -> None:
                with server._lock:
                    server.gets.append({"path": self.path,
                                        "headers": {k.lower(): v for k, v in self.headers.items()}})
                if self.path.rstrip("/") != "/v1/models" or server.models is None:
                    self._send(404, {}, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                self._send(200, {}, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"}
                                                                for m in server.models]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_unparseable": raw.decode("utf-8", "replace")}
                with server._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.requests.append({"path": self.path, "headers": headers, "json": body})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path.rstrip("/") != "/v1/chat/completions":
                        self._send(404, {}, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                        return
                    with server._generating(self.connection) as turn:
                        if not turn:
                            return
                        status, headers, payload, action = server._respond(body)
                        if status == 200 and body.get("stream"):
                            self._stream(headers, payload, action, body)
                        else:
                            if status == 200:  # the time it takes to generate the reply
                                words = sum(len(pieces(c["message"]["content"])) for c in payload["choices"])
                                time.sleep(words * float(action.get("token_delay", server.token_delay)))
                            self._send(status, headers, payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up and left: stop
                    server._count(aborted=1)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
