"""One client for OpenAI-compatible chat-completions endpoints: the LLM judge and the cascade's
remote LLM (docs/architecture.md, "OpenAI-compatible endpoints").

Both talk to OpenAI, vLLM, llama.cpp's server or Ollama through `ChatEndpoint`, so they share
one key rule, one retry policy, one timeout meaning, one error mapping and one token count:

- **Key rule** (`api_key`): a key is read from the environment only. OPENAI_API_KEY goes to
  OpenAI's own API (api.openai.com) and nowhere else; any other endpoint gets the key in the
  variable the user named (`--judge-api-key-env`, the cascade's `api_key_env`), else the
  caller's own variable (the judge's IVBENCH_JUDGE_API_KEY), else no key at all. A key sent
  over plain http to a host other than this machine is warned about once.
- **Streaming, and what a timeout means**: every reply is streamed (server-sent events), and
  `timeout` is the longest *silence* allowed (to connect, before the first byte, between two
  events), never the length of the whole reply: a slow but progressing reply is not cut and
  asked again. A request that is given up is closed, so a server such as llama.cpp's stops
  generating it instead of finishing an answer nobody reads.
- **Retries**: 408/409/429, 5xx, silence and a lost connection are retried with exponential
  backoff and jitter (honouring Retry-After up to `backoff_max`), but never once text has
  been handed to the caller (the cascade has spoken it). A refused connection (or a host that
  does not resolve, or does not answer the connect) is retried at most `CONNECT_RETRIES`
  times, quickly; then the endpoint counts as unreachable.
- **Stopping for good**: 401/403/404, an unreachable server and a model the server does not
  list stop the endpoint: every later request fails at once with the same reason, so a run
  against a dead server fails in about a second, not a backoff per request.
- **The model name** is checked once against `GET /models` where the server lists models;
  a server without that route is taken at its word.
- **Error bodies** of any shape (`{"error": {...}}`, `{"error": "..."}`, `{"detail": ...}`,
  plain text) end up in the failure reason.

It uses the standard library's http.client (with idle connections kept for reuse), not the
openai package: the package reads OPENAI_API_KEY, OPENAI_BASE_URL and organisation variables
on its own, and its timeouts and error types differ between its major versions.
"""
from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import os
import random
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies, proxy_bypass

from .errors import ConfigError, EndpointError

log = logging.getLogger("ivbench")

OPENAI_URL = "https://api.openai.com/v1"
OPENAI_HOSTS = ("api.openai.com",)
OPENAI_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
RETRYABLE_STATUS = (408, 409, 429)
FATAL_STATUS = (401, 403, 404)
CONNECT_TIMEOUT = 10.0  # seconds to open a connection (at most `timeout`)
CONNECT_RETRIES = 2  # further tries after a refused connection, before the endpoint is unreachable
CONNECT_BACKOFF = 0.25  # seconds before the first of them; doubles
IDLE_CONNECTIONS = 8
FIRST_BYTE_POLL = 0.1  # seconds between looks at stop() while waiting for an answer to start
REASON_LIMIT = 300

Messages = list[dict[str, str]]
OnText = Callable[[str], None]
Stop = Callable[[], bool]


# -- where, and with which key ------------------------------------------------------------------

def resolve_base_url(base_url: Optional[str]) -> str:
    """`base_url`, else $OPENAI_BASE_URL, else OpenAI's API; without a trailing slash."""
    url = (base_url or os.environ.get(BASE_URL_ENV, "").strip() or OPENAI_URL).rstrip("/")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ConfigError(f"endpoint {url!r}: give an http:// or https:// URL such as "
                          "http://127.0.0.1:8080/v1")
    return url


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_openai(endpoint: Optional[str]) -> bool:
    """Whether `endpoint` (None: the default) is OpenAI's own API."""
    return endpoint is None or _host(endpoint) in OPENAI_HOSTS


def is_loopback(endpoint: str) -> bool:
    host = _host(endpoint)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def _warn_clear_text(endpoint: str, source: str) -> None:
    if urlsplit(endpoint).scheme != "http" or is_loopback(endpoint):
        return
    with _WARNED_LOCK:
        if (endpoint, source) in _WARNED:
            return
        _WARNED.add((endpoint, source))
    log.warning("the API key in $%s is sent to %s over plain http: anyone on the way can read it; "
                "use https, or unset the variable if the server needs no key", source, endpoint)


def api_key(endpoint: str, key_env: Optional[str] = None, fallback_env: Optional[str] = None, *,
            what: str = "endpoint", option: str = "api_key_env") -> Optional[str]:
    """The key for `endpoint`, or None where it gets none (see the module's key rule).

    `key_env`: the variable the user named (None: not named). `fallback_env`: the caller's own
    variable for endpoints other than OpenAI's. A named variable that is unset, and OpenAI's
    API without OPENAI_API_KEY, are a ConfigError naming the variable.
    """
    if key_env:
        key, source = os.environ.get(key_env, "").strip(), key_env
        if not key:
            raise ConfigError(f"{what} at {endpoint}: the environment variable {key_env} ({option}) is not set; "
                              f"set it to the key, or leave {option} out for a server that needs none")
    elif is_openai(endpoint):
        key, source = os.environ.get(OPENAI_KEY_ENV, "").strip(), OPENAI_KEY_ENV
        if not key:
            raise ConfigError(f"{what} at {endpoint}: no API key. Set the environment variable {OPENAI_KEY_ENV} "
                              f"(keys are read from the environment only; {option} names another variable), "
                              "or give the base URL of a local OpenAI-compatible server that needs none")
    else:
        key, source = (os.environ.get(fallback_env, "").strip() if fallback_env else ""), fallback_env or ""
        if not key:
            return None
    _warn_clear_text(endpoint, source)
    return key


# -- results, failures, counts ------------------------------------------------------------------

def token_cost(prices: Optional[tuple[float, float]], prompt_tokens: int, completion_tokens: int) -> Optional[float]:
    """USD for the tokens at (input, output) USD per 1M tokens; None without prices."""
    if prices is None:
        return None
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6


@dataclass
class EndpointStats:
    """What an endpoint was asked, over all its requests (thread-safe through its endpoint)."""

    http_requests: int = 0  # attempts, retries included
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unreported_usage: int = 0  # replies that reported no token counts (not counted as 0 tokens)


@dataclass
class Completion:
    """One request's reply: the text of each choice (by index), how each ended, its tokens."""

    texts: list[str] = field(default_factory=list)
    finish_reasons: list[Optional[str]] = field(default_factory=list)
    prompt_tokens: Optional[int] = None  # None: the server did not say
    completion_tokens: Optional[int] = None
    model: Optional[str] = None  # the model name the server reported
    retries: int = 0
    stopped: bool = False  # the caller's stop() ended it early


class RequestFailed(EndpointError):
    """A request that failed for good. `reason` is the same text for every request that failed
    for the same cause (so failures can be grouped); `fatal`: the endpoint has stopped."""

    def __init__(self, reason: str, retries: int = 0, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retries = retries
        self.fatal = fatal


class _Failure(Exception):
    """One attempt's failure and what may be done about it."""

    def __init__(self, reason: str, *, retryable: bool = False, fatal: bool = False, unreachable: bool = False,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.fatal = fatal
        self.unreachable = unreachable
        self.retry_after = retry_after


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT - 1] + "…"


def error_message(data: Any) -> str:
    """The readable part of an error body, whatever its shape: OpenAI's {"error": {"message",
    "code"}}, {"error": "text"}, FastAPI's {"detail": "text" or [{"msg": …}]}, or anything else."""
    if isinstance(data, dict):
        for key in ("error", "detail", "message", "msg"):
            if key in data and data[key] not in (None, "", [], {}):
                inner = error_message(data[key])
                code = data.get("code") if key in ("message", "msg") else None
                return f"{inner} ({code})" if isinstance(code, str) and code and code not in inner else inner
        return json.dumps(data, sort_keys=True)
    if isinstance(data, list):
        return "; ".join(error_message(item) for item in data[:3])
    return str(data)


def _body_message(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        return _shorten(error_message(json.loads(text)))
    except ValueError:
        return _shorten(text)


def _retry_after(response: http.client.HTTPResponse) -> Optional[float]:
    try:
        if response.getheader("retry-after-ms") is not None:
            return float(response.getheader("retry-after-ms") or 0) / 1000.0
        if response.getheader("retry-after") is not None:
            return float(response.getheader("retry-after") or 0)
    except ValueError:  # an HTTP date: our own backoff instead
        return None
    return None


def _int_or_none(value: Any) -> Optional[int]:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class _Reply:
    """Collects a streamed (or whole) chat completion, handing choice 0's text on as it comes."""

    def __init__(self, on_text: Optional[OnText]) -> None:
        self.on_text = on_text
        self.parts: dict[int, list[str]] = {}
        self.finish: dict[int, Optional[str]] = {}
        self.usage: Optional[dict[str, Any]] = None
        self.model: Optional[str] = None
        self.delivered = False

    def add(self, event: dict[str, Any]) -> None:
        self.model = self.model or (event.get("model") if isinstance(event.get("model"), str) else None)
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        for choice in event.get("choices") or []:
            index = _int_or_none(choice.get("index")) or 0
            delta = choice.get("delta") or choice.get("message") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            self.parts.setdefault(index, [])
            if isinstance(text, str) and text:
                self.parts[index].append(text)
                if index == 0 and self.on_text is not None:
                    self.delivered = True
                    self.on_text(text)
            if choice.get("finish_reason") or index not in self.finish:
                self.finish[index] = choice.get("finish_reason") or None

    def completion(self) -> Completion:
        order = sorted(self.parts)
        usage = self.usage or {}
        return Completion(texts=["".join(self.parts[i]) for i in order],
                          finish_reasons=[self.finish.get(i) for i in order],
                          prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
                          completion_tokens=_int_or_none(usage.get("completion_tokens")), model=self.model)


def _sse_events(response: http.client.HTTPResponse) -> Iterator[tuple[str, str]]:
    """(event name, data) of each server-sent event; comments (keep-alive pings) are skipped."""
    name = "message"
    data: list[str] = []
    while True:
        raw = response.readline()
        if not raw:
            break
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "data":
            data.append(value)
        elif key == "event":
            name = value
        elif key == "error":  # llama.cpp writes "error: {json}" for a failure mid-stream
            name, data = "error", [value]
    if data:
        yield name, "\n".join(data)


@dataclass(frozen=True)
class OptionNames:
    """What the user calls the options a failure reason points to."""

    model: str = "model"
    timeout: str = "timeout"
    base_url: str = "base_url"


# -- the client -------------------------------------------------------------------------------

class ChatEndpoint:
    """Streamed chat completions from one endpoint and model; thread-safe, share one per run."""

    def __init__(self, base_url: Optional[str], model: str, *, key: Optional[str], timeout: float = 120.0,
                 retries: int = 5, backoff_base: float = 1.0, backoff_max: float = 60.0,
                 names: OptionNames = OptionNames(), sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        self.url = resolve_base_url(base_url)
        self.model = model
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.names = names
        self.stats = EndpointStats()
        self._key = key
        self._sleep = sleep
        self._jitter = jitter
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._model_checked = False
        self.unreachable_at_check: Optional[str] = None  # why `GET /models` found no server, if it did not
        self._fatal: Optional[str] = None
        self._idle: list[http.client.HTTPConnection] = []
        self._ssl: Optional[ssl.SSLContext] = None
        self._last_heard = 0.0  # time.monotonic() of the last byte any request received

    def __repr__(self) -> str:  # never the key
        return f"ChatEndpoint({self.url!r}, model={self.model!r})"

    @property
    def stopped_reason(self) -> Optional[str]:
        """Why the endpoint stopped (every request now fails with it), or None."""
        return self._fatal

    # -- public ----------------------------------------------------------------------------

    def chat(self, messages: Messages, params: Optional[dict[str, Any]] = None, *,
             on_text: Optional[OnText] = None, stop: Optional[Stop] = None) -> Completion:
        """One streamed completion of `messages` with the extra request fields `params`
        (temperature, max_tokens, n…). `on_text` gets choice 0's text as it arrives; `stop()`,
        polled between events, ends the reply early (the connection is closed). Raises
        RequestFailed after the retries."""
        self.check_model()
        body = {"model": self.model, "messages": messages, **(params or {}), "stream": True,
                "stream_options": {"include_usage": True}}
        retries = refused = 0
        while True:
            if self._fatal is not None:
                raise RequestFailed(self._fatal, retries, fatal=True)
            reply = _Reply(on_text)
            self._count(http_requests=1)
            try:
                completion = self._attempt(body, reply, stop)
            except _Failure as failure:
                delay = self._retry_delay(failure, retries, refused, reply.delivered)
                if delay is None:
                    raise self._give_up(failure, retries) from None
                refused += failure.unreachable
                retries += 1
                self._count(retries=1)
                self._sleep(delay)
                continue
            completion.retries = retries
            self._count_usage(completion)
            return completion

    def served_models(self) -> Optional[list[str]]:
        """The model names `GET /models` lists; None where the server lists none, has no such
        route, or cannot be asked (the chat request will say why)."""
        try:
            status, raw = self._get("/models")
        except _Failure as exc:
            if exc.unreachable:
                self.unreachable_at_check = exc.reason
            return None
        if status != 200:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        entries = data.get("data") if isinstance(data, dict) else None
        names = [str(e["id"]) for e in entries or [] if isinstance(e, dict) and e.get("id")]
        return names or None

    def check_model(self) -> None:
        """Once per endpoint: where the server lists its models, `model` must be one of them
        (a path's file name, with or without .gguf, and Ollama's implicit ":latest" count). A
        model it does not serve stops the endpoint (RequestFailed, fatal)."""
        with self._model_lock:
            if self._model_checked:
                return
            served = self.served_models()
            self._model_checked = True
            if served is None or _model_served(self.model, served):
                return
            shown = ", ".join(served[:20]) + (f" … ({len(served)} in all)" if len(served) > 20 else "")
            self._stop(f"model {self.model!r} is not served by {self.url}: it serves {shown}; "
                       f"give one of those as {self.names.model}")
        raise RequestFailed(self._fatal or "", 0, fatal=True)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- one attempt -----------------------------------------------------------------------

    def _attempt(self, body: dict[str, Any], reply: _Reply, stop: Optional[Stop]) -> Completion:
        conn, response = self._request("POST", "/chat/completions", json.dumps(body).encode("utf-8"), stop)
        reusable = False
        try:
            if response is None:
                return _stopped(reply)
            if response.status != 200:
                raw = response.read()
                raise self._status_failure(response, raw)
            if "text/event-stream" not in (response.getheader("Content-Type") or ""):
                self._add_whole(reply, self._json(response.read()))  # a server that answered in one piece
            elif not self._read_stream(response, reply, stop):
                return _stopped(reply)
            response.read()  # the rest (chunked encoding's end), so the connection can be reused
            reusable = not response.will_close
            return reply.completion()
        except TimeoutError:
            raise _Failure(f"no reply for {self.timeout:g} s ({self.names.timeout})", retryable=True) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Failure(f"the connection was lost ({type(exc).__name__}: {exc})".replace(": )", ")"),
                           retryable=True) from None
        finally:
            self._release(conn, reusable)

    def _read_stream(self, response: http.client.HTTPResponse, reply: _Reply, stop: Optional[Stop]) -> bool:
        """Reads the events into `reply`; False when `stop()` ended it first."""
        done = False
        for name, data in _sse_events(response):
            if data.strip() == "[DONE]":
                done = True
                break
            event = self._json(data.encode("utf-8"))
            if name == "error" or ("error" in event and not event.get("choices")):
                raise _Failure(f"the server failed mid-reply: {_shorten(error_message(event))}")
            if stop is not None and stop():
                return False
            reply.add(event)
            self._heard()
        if not done and not any(reply.finish.values()):
            raise _Failure("the reply stream ended before the reply did (connection closed)", retryable=True)
        return True

    @staticmethod
    def _add_whole(reply: _Reply, data: dict[str, Any]) -> None:
        if "error" in data and not data.get("choices"):
            raise _Failure(f"the server answered with an error: {_shorten(error_message(data))}")
        reply.add(data)

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError:
            raise _Failure(f"malformed reply (not JSON): {_shorten(raw.decode('utf-8', 'replace'))!r}") from None
        if not isinstance(data, dict):
            raise _Failure(f"malformed reply (not a JSON object): {_shorten(str(data))!r}")
        return data

    def _status_failure(self, response: http.client.HTTPResponse, raw: bytes) -> _Failure:
        status = response.status
        reason = f"HTTP {status}: {_body_message(raw) or response.reason}"
        return _Failure(reason, retryable=status in RETRYABLE_STATUS or status >= 500, fatal=status in FATAL_STATUS,
                        retry_after=_retry_after(response))

    def _retry_delay(self, failure: _Failure, retries: int, refused: int, delivered: bool) -> Optional[float]:
        """Seconds to wait before trying again, or None to give up."""
        if delivered or failure.fatal:
            return None
        if failure.unreachable:
            if refused >= min(self.retries, CONNECT_RETRIES):
                return None
            return CONNECT_BACKOFF * (2 ** refused)
        if not failure.retryable or retries >= self.retries:
            return None
        delay = min(self.backoff_max, self.backoff_base * (2 ** retries))
        delay *= 0.5 + 0.5 * self._jitter()  # "equal jitter": between half and all of it
        if failure.retry_after is not None:
            delay = max(delay, min(failure.retry_after, self.backoff_max))
        return delay

    def _give_up(self, failure: _Failure, retries: int) -> RequestFailed:
        if failure.fatal or failure.unreachable:
            return RequestFailed(self._stop(failure.reason), retries, fatal=True)
        return RequestFailed(failure.reason, retries)

    def _stop(self, reason: str) -> str:
        with self._lock:
            if self._fatal is None:
                self._fatal = reason
            return self._fatal

    # -- HTTP ------------------------------------------------------------------------------

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)

    def _count_usage(self, completion: Completion) -> None:
        if completion.prompt_tokens is None and completion.completion_tokens is None:
            self._count(unreported_usage=1)
        else:
            self._count(prompt_tokens=completion.prompt_tokens or 0,
                        completion_tokens=completion.completion_tokens or 0)

    def _headers(self, body: Optional[bytes]) -> dict[str, str]:
        from . import __version__

        headers = {"User-Agent": f"ivbench/{__version__}", "Accept": "text/event-stream, application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _get(self, suffix: str) -> tuple[int, bytes]:
        conn, response = self._request("GET", suffix, None)
        reusable = False
        try:
            assert response is not None  # no stop(): the wait ends with an answer or a timeout
            raw = response.read()
            reusable = not response.will_close
            return response.status, raw
        except (OSError, http.client.HTTPException) as exc:
            raise _Failure(str(exc), retryable=True) from None
        finally:
            self._release(conn, reusable)

    def _request(self, method: str, suffix: str, body: Optional[bytes], stop: Optional[Stop] = None
                 ) -> tuple[http.client.HTTPConnection, Optional[http.client.HTTPResponse]]:
        """Sends the request on an idle connection (one the server has closed meanwhile is
        replaced without counting a retry) or a new one; returns it with the response headers,
        or with None where `stop()` ended the wait for them."""
        conn = self._take_idle()
        while True:
            fresh = conn is None
            if conn is None:
                conn = self._connect()
            try:
                conn.request(method, self._target(suffix), body=body, headers=self._headers(body))
                if not self._await_first_byte(conn, stop):
                    return conn, None
                response = conn.getresponse()
                self._heard()
                return conn, response
            except TimeoutError:
                conn.close()
                raise _Failure(f"no reply for {self.timeout:g} s ({self.names.timeout})", retryable=True) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if not fresh:  # the server closed the idle connection: open a new one
                    conn = None
                    continue
                raise _Failure(f"the connection was lost ({type(exc).__name__}: {exc})".replace(": )", ")"),
                               retryable=True) from None

    def _heard(self) -> None:
        self._last_heard = time.monotonic()

    def _await_first_byte(self, conn: http.client.HTTPConnection, stop: Optional[Stop]) -> bool:
        """Waits for the answer to start; False when `stop()` says to give up first. The server
        is silent only when none of this endpoint's requests has heard from it for `timeout`
        seconds: a request queued behind others on a server that answers one at a time (llama.cpp
        with one slot) waits its turn while the others stream, instead of timing out, losing its
        place and being sent again."""
        if conn.sock is None:
            return True
        started = time.monotonic()
        while True:
            if stop is not None and stop():
                return False
            readable, _, _ = select.select([conn.sock], [], [], FIRST_BYTE_POLL)
            if readable:
                return True
            if time.monotonic() - max(started, self._last_heard) >= self.timeout:
                raise TimeoutError

    def _connect(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        https = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if https else 80)
        proxy = _proxy_for(self.url, host)
        target_host, target_port = (proxy.hostname or "", proxy.port or 80) if proxy else (host, port)
        timeout = min(self.timeout, CONNECT_TIMEOUT)
        conn: http.client.HTTPConnection
        if https:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            conn = http.client.HTTPSConnection(target_host, target_port, timeout=timeout, context=self._ssl)
            if proxy:
                conn.set_tunnel(host, port, headers=_proxy_auth(proxy))
        else:
            conn = http.client.HTTPConnection(target_host, target_port, timeout=timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise _Failure(f"{self.url} is unreachable ({_connect_error(exc, timeout)}); check {self.names.base_url} "
                           "and that the server is running", unreachable=True) from None
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout)  # from now on: the longest silence
        return conn

    def _target(self, suffix: str) -> str:
        parts = urlsplit(self.url)
        path = parts.path.rstrip("/") + suffix
        if parts.scheme == "http" and _proxy_for(self.url, parts.hostname or ""):
            return f"{self.url}{suffix}"  # a plain-http proxy takes the whole URL
        return path

    def _take_idle(self) -> Optional[http.client.HTTPConnection]:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _release(self, conn: http.client.HTTPConnection, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    return
        conn.close()  # a reply given up: the server sees the connection go and stops generating it


def _stopped(reply: _Reply) -> Completion:
    completion = reply.completion()
    completion.stopped = True
    return completion


def _model_served(model: str, served: list[str]) -> bool:
    wanted = {model, model.removesuffix(".gguf")}
    if ":" not in model:
        wanted.add(f"{model}:latest")  # Ollama
    for name in served:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]  # llama.cpp lists the model file's path
        if {name, base, base.removesuffix(".gguf")} & wanted:
            return True
    return False


def _connect_error(exc: OSError, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host not found: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer to the connection within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"


def _proxy_for(url: str, host: str) -> Any:
    """The proxy ($https_proxy, $http_proxy, minus $no_proxy) for `url`, as urlsplit parts; never
    for this machine."""
    if is_loopback(url):
        return None
    proxy = getproxies().get(urlsplit(url).scheme)
    if not proxy or proxy_bypass(host):
        return None
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def _proxy_auth(proxy: Any) -> dict[str, str]:
    if not proxy.username:
        return {}
    token = base64.b64encode(f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}


__all__ = ["ChatEndpoint", "Completion", "EndpointStats", "OptionNames", "RequestFailed", "api_key",
           "error_message", "is_loopback", "is_openai", "resolve_base_url", "token_cost"]
