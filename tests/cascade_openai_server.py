"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1 that streams (SSE).

For the cascade's `openai` LLM backend, which asks for `stream: true`: the reply is sent as
`chat.completion.chunk` events, one word (with its leading space) per event, then
`data: [DONE]`. A request without `stream` gets one ordinary `chat.completion`.

    with StreamingChatServer(reply="Hello there.") as server:
        server.push({"status": 500}, {"content": "Second reply.", "token_delay": 0.05})
        ... Cascade(llm_backend="openai", llm_model="fake", base_url=server.url) ...
        server.requests  # every request: {"path", "headers" (lower-case names), "json"}

Each request takes the next scripted action, or the defaults when none is left. An action
is a dict with any of: ``status`` (answer that HTTP status with an OpenAI-style error body),
``content`` (the reply text, or a function of the request's JSON returning it), ``delay``
(seconds before answering), ``token_delay`` (seconds between streamed events).
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
    block_on_close = False
    allow_reuse_address = True


def pieces(text: str) -> list[str]:
    """How the server splits a reply into streamed tokens: words with their leading space."""
    return re.findall(r"\s*\S+", text)


class StreamingChatServer:
    def __init__(self, reply: Reply = "Hello there.", token_delay: float = 0.0) -> None:
        self.reply = reply
        self.token_delay = token_delay
        self.requests: list[dict[str, Any]] = []
        self._actions: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def push(self, *actions: dict[str, Any]) -> None:
        with self._lock:
            self._actions.extend(actions)

    def start(self) -> "StreamingChatServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="cascade-openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "StreamingChatServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _next_action(self) -> dict[str, Any]:
        with self._lock:
            return self._actions.popleft() if self._actions else {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the connection closes after each answer

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "json": body,
                                            "headers": {k.lower(): v for k, v in self.headers.items()}})
                action = server._next_action()
                try:
                    if action.get("delay"):
                        time.sleep(float(action["delay"]))
                    if self.path.rstrip("/") != "/v1/chat/completions":
                        self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                        return
                    status = int(action.get("status", 200))
                    if status != 200:
                        self._json(status, {"error": {"message": f"scripted HTTP {status}",
                                                      "type": "server_error", "param": None, "code": None}})
                        return
                    content = action.get("content", server.reply)
                    text = content(body) if callable(content) else str(content)
                    delay = float(action.get("token_delay", server.token_delay))
                    if body.get("stream"):
                        self._stream(body, text, delay)
                    else:
                        self._json(200, self._completion(body, text))
                except (BrokenPipeError, ConnectionResetError):  # the client went away
                    pass

            def _completion(self, body: dict[str, Any], text: str) -> dict[str, Any]:
                return {"id": "chatcmpl-cascade-test", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop", "logprobs": None}]}

            def _stream(self, body: dict[str, Any], text: str, delay: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                base = {"id": "chatcmpl-cascade-test", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": body.get("model", "fake")}

                def send(delta: dict[str, Any], finish: Optional[str] = None) -> None:
                    event = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                  "logprobs": None}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode("utf-8"))
                    self.wfile.flush()

                send({"role": "assistant", "content": ""})
                for piece in pieces(text):
                    if delay:
                        time.sleep(delay)
                    send({"content": piece})
                send({}, "stop")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler
