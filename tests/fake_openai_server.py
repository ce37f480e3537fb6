"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1, for judge and cascade tests.

A real HTTP server (stdlib, one thread per request) on a free port, so the code under test
talks through the real `openai` client and its real HTTP stack:

    with FakeOpenAIServer(reply="Score: 4") as server:
        server.push({"status": 429}, {"status": 500}, {"delay": 2.0}, {"content": "Score: 5"})
        ... JudgeSettings(model="fake", base_url=server.url) ...
        ... Cascade(llm_backend="openai", llm_model="fake", base_url=server.url) ...
        server.requests  # every request received: {"path", "headers" (lower-case names), "json"}

A request with ``"stream": true`` (the cascade's `openai` LLM backend) is answered with
server-sent ``chat.completion.chunk`` events, one word (with its leading space, see
`pieces`) per event, then ``data: [DONE]``; any other request gets one ordinary
``chat.completion`` with usage (the judge).

Each request takes the next scripted action, or the defaults when none is left. An action
is a dict:

- ``{"status": 429}``: that HTTP status with an OpenAI-style error body (optional ``headers``);
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
  ``token_delay``, 0).

The default reply may be a string or a function of the request's JSON returning one.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union

Reply = Union[str, Callable[[dict[str, Any]], str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping out a delay must not hold up stop()
    allow_reuse_address = True


def pieces(text: str) -> list[str]:
    """How the server splits a streamed reply into tokens: words with their leading space."""
    return re.findall(r"\s*\S+", text)


class FakeOpenAIServer:
    def __init__(self, reply: Reply = "Score: 4", token_delay: float = 0.0) -> None:
        self.reply = reply
        self.token_delay = token_delay
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
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

    def start(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------

    def _next_action(self) -> dict[str, Any]:
        with self._lock:
            return self._actions.popleft() if self._actions else {}

    def _respond(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any], dict[str, Any]]:
        """(status, headers, payload, action): the payload is an error body or a whole
        `chat.completion`; a streamed request is sent from the latter's choices."""
        action = self._next_action()
        if action.get("delay"):
            time.sleep(float(action["delay"]))
        status = int(action.get("status", 200))
        headers = dict(action.get("headers") or {})
        if status != 200:
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            return status, headers, {"error": {"message": f"scripted HTTP {status}", "type": kind,
                                               "param": None, "code": kind}}, action
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
                         "finish_reason": "stop", "logprobs": None} for i, c in enumerate(contents)],
            "usage": usage,
        }, action

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the connection closes after each answer

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, headers: dict[str, str], payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, str(value))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, headers: dict[str, str], completion: dict[str, Any], delay: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                for key, value in headers.items():
                    self.send_header(key, str(value))
                self.end_headers()
                base = {key: completion[key] for key in ("id", "created", "model")}
                base["object"] = "chat.completion.chunk"

                def send(index: int, delta: dict[str, Any], finish: Optional[str] = None) -> None:
                    event = {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish,
                                                  "logprobs": None}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode("utf-8"))
                    self.wfile.flush()

                for choice in completion["choices"]:
                    index = choice["index"]
                    send(index, {"role": "assistant", "content": ""})
                    for piece in pieces(choice["message"]["content"]):
                        if delay:
                            time.sleep(delay)
                        send(index, {"content": piece})
                    send(index, {}, "stop")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_unparseable": raw.decode("utf-8", "replace")}
                with server._lock:
                    server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                            "json": body})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path.rstrip("/") != "/v1/chat/completions":
                        self._send(404, {}, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                        return
                    status, headers, payload, action = server._respond(body)
                    if status == 200 and body.get("stream"):
                        self._stream(headers, payload, float(action.get("token_delay", server.token_delay)))
                    else:
                        self._send(status, headers, payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
