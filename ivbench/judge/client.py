"""The judge client: the `openai` package against any OpenAI-compatible endpoint.

- ivbench does its own retries (the openai client gets `max_retries=0`), so it can count
  them: exponential backoff with jitter on 429, 408/409, 5xx, timeouts and connection errors,
  honouring a server's Retry-After up to `backoff_max`;
- requests run concurrently in a thread pool (`concurrency` at once); identical requests in
  one batch are sent once;
- every completed request is cached in a SqliteCache keyed by
  `content_key(model, base_url, messages, n, temperature, max_tokens)`, so a re-score makes no
  HTTP request and reads back the same replies and the same token usage;
- `stats` counts calls, cache hits, HTTP requests, retries, errors and the tokens spent.

An authentication, permission or not-found error (401/403/404) will not get better by
retrying, nor for the next request: the first one stops the client and every later request
fails at once with the same message.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..cache import SqliteCache, content_key, default_cache_dir
from .settings import JudgeSettings

Messages = list[dict[str, str]]
CACHE_FILE = "judge.sqlite"
RETRYABLE_STATUS = (408, 409, 429)
FATAL_STATUS = (401, 403, 404)


@dataclass
class JudgeReply:
    """The raw reply text of each sample (in order), the tokens it took, or why there is none."""

    texts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: Optional[str] = None  # the model name the endpoint reported
    finish_reasons: list[Optional[str]] = field(default_factory=list)
    cached: bool = False
    retries: int = 0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_cache(self) -> bytes:
        return json.dumps({"texts": self.texts, "prompt_tokens": self.prompt_tokens,
                           "completion_tokens": self.completion_tokens, "model": self.model,
                           "finish_reasons": self.finish_reasons},
                          sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_cache(cls, blob: bytes) -> "JudgeReply":
        data = json.loads(blob)
        return cls(texts=list(data["texts"]), prompt_tokens=int(data.get("prompt_tokens") or 0),
                   completion_tokens=int(data.get("completion_tokens") or 0), model=data.get("model"),
                   finish_reasons=list(data.get("finish_reasons") or []), cached=True)


@dataclass
class JudgeStats:
    """What one run asked of the judge. Tokens count HTTP replies only (cache hits are free)."""

    calls: int = 0  # judgements asked for
    cache_hits: int = 0  # served without a request (from the cache, or a duplicate in the batch)
    http_requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    errors: int = 0  # judgements that failed after retries
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self, settings: Optional[JudgeSettings] = None) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.__dict__)
        out["cost_usd"] = None if settings is None else settings.cost(self.prompt_tokens, self.completion_tokens)
        return out


class JudgeRequestError(RuntimeError):
    def __init__(self, message: str, retries: int, fatal: bool = False) -> None:
        super().__init__(message)
        self.retries = retries
        self.fatal = fatal


def _classify(exc: BaseException, timeout: float) -> tuple[bool, bool, str, Optional[float]]:
    """(retryable, fatal, message, retry-after seconds) for an exception from the openai client."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return True, False, f"timed out after {timeout:g} s", None
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return True, False, f"connection error: {cause or exc}", None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after(getattr(exc, "response", None))
        message = f"HTTP {status}: {_short(exc)}"
        retryable = status in RETRYABLE_STATUS or status >= 500
        return retryable, status in FATAL_STATUS, message, retry_after
    return False, False, f"{type(exc).__name__}: {exc}", None


def _short(exc: BaseException, limit: int = 300) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else None
        if text:
            return str(text)[:limit]
    return str(exc)[:limit]


def _retry_after(response: Any) -> Optional[float]:
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except (TypeError, ValueError):  # an HTTP date: fall back to our own backoff
        return None
    return None


class JudgeClient:
    """Thread-safe; one per scoring run, shared by the judge metrics (see `shared_client`)."""

    def __init__(self, settings: JudgeSettings, cache: Optional[SqliteCache] = None, *,
                 cache_dir: Optional[Path] = None, use_cache: Optional[bool] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self._api_key = settings.api_key()  # fail at load time, not on the first request
        if cache is None:
            folder = settings.cache_dir or cache_dir or default_cache_dir()
            enabled = settings.use_cache if use_cache is None else (use_cache and settings.use_cache)
            cache = SqliteCache(Path(folder) / CACHE_FILE, enabled=enabled)
        self.cache = cache
        self.stats = JudgeStats()
        self._sleep = sleep
        self._jitter = jitter
        self._lock = threading.Lock()
        self._openai: Any = None
        self._fatal: Optional[str] = None

    # -- public --------------------------------------------------------------------------

    def request_key(self, messages: Messages) -> str:
        s = self.settings
        return content_key(s.model, s.base_url, messages, s.n, float(s.temperature), s.max_tokens)

    def complete(self, messages: Messages) -> JudgeReply:
        """One judgement: `settings.n` sample replies to `messages`, from the cache or the endpoint."""
        self._count(calls=1)
        return self._complete(messages, self.request_key(messages))

    def complete_many(self, batch: Sequence[Messages]) -> list[JudgeReply]:
        """Judgements for many prompts, `concurrency` requests at a time, in the input's order."""
        keys = [self.request_key(m) for m in batch]
        unique: dict[str, Messages] = {}
        for key, messages in zip(keys, batch):
            unique.setdefault(key, messages)
        self._count(calls=len(batch), cache_hits=len(batch) - len(unique))
        if not unique:
            return []
        workers = max(1, min(self.settings.concurrency, len(unique)))
        if workers == 1:
            done = {key: self._complete(messages, key) for key, messages in unique.items()}
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ivbench-judge") as pool:
                futures = {key: pool.submit(self._complete, messages, key) for key, messages in unique.items()}
                done = {key: future.result() for key, future in futures.items()}
        return [done[key] for key in keys]

    def close(self) -> None:
        with self._lock:
            client, self._openai = self._openai, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing is best effort
                pass
        self.cache.close()

    # -- internals -----------------------------------------------------------------------

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)

    def _api(self) -> Any:
        with self._lock:
            if self._openai is None:
                import openai

                kwargs: dict[str, Any] = {"api_key": self._api_key, "max_retries": 0,
                                          "timeout": self.settings.timeout}
                if self.settings.base_url:
                    kwargs["base_url"] = self.settings.base_url
                self._openai = openai.OpenAI(**kwargs)
            return self._openai

    def _complete(self, messages: Messages, key: str) -> JudgeReply:
        blob = self.cache.get(key)
        if blob is not None:
            self._count(cache_hits=1)
            return JudgeReply.from_cache(blob)
        if self._fatal is not None:
            self._count(errors=1)
            return JudgeReply(error=self._fatal)
        reply = JudgeReply()
        try:
            # An endpoint may return fewer choices than `n` (llama.cpp and Ollama ignore `n`):
            # ask again for the rest, at most n times.
            for _ in range(self.settings.n):
                missing = self.settings.n - len(reply.texts)
                if missing <= 0:
                    break
                response, retries = self._create(messages, missing)
                reply.retries += retries
                choices = sorted(response.choices or [], key=lambda c: c.index or 0)[:missing]
                reply.texts += [(c.message.content if c.message else None) or "" for c in choices]
                reply.finish_reasons += [c.finish_reason for c in choices]
                usage = response.usage
                pt = int(getattr(usage, "prompt_tokens", 0) or 0)
                ct = int(getattr(usage, "completion_tokens", 0) or 0)
                reply.prompt_tokens += pt
                reply.completion_tokens += ct
                reply.model = reply.model or getattr(response, "model", None)
                self._count(prompt_tokens=pt, completion_tokens=ct)
            if len(reply.texts) < self.settings.n:
                raise JudgeRequestError(f"the endpoint returned {len(reply.texts)} of "
                                        f"{self.settings.n} samples", reply.retries)
        except JudgeRequestError as exc:
            self._count(errors=1)
            if exc.fatal:
                self._fatal = f"judge stopped after an earlier error: {exc}"
            return JudgeReply(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                              retries=reply.retries + exc.retries,
                              error=f"{exc} (after {reply.retries + exc.retries} retries)")
        self.cache.put(key, reply.to_cache())
        return reply

    def _create(self, messages: Messages, n: int) -> tuple[Any, int]:
        s = self.settings
        params: dict[str, Any] = {"model": s.model, "messages": messages, "temperature": float(s.temperature)}
        if n > 1:
            params["n"] = n
        if s.max_tokens is not None:
            params["max_tokens"] = s.max_tokens
        api = self._api()
        for attempt in range(s.retries + 1):
            self._count(http_requests=1)
            try:
                return api.chat.completions.create(**params), attempt
            except Exception as exc:
                retryable, fatal, message, retry_after = _classify(exc, s.timeout)
                if not retryable or attempt == s.retries:
                    raise JudgeRequestError(message, attempt, fatal) from exc
                self._count(retries=1)
                self._sleep(self._backoff(attempt, retry_after))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: Optional[float]) -> float:
        s = self.settings
        delay = min(s.backoff_max, s.backoff_base * (2 ** attempt))
        delay *= 0.5 + 0.5 * self._jitter()  # "equal jitter": between half and all of it
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.backoff_max))
        return delay


SHARED_KEY = "judge_client"


def shared_client(context: Any) -> Optional[JudgeClient]:
    """The scoring run's one judge client, made on first use from `context.judge`.

    `context` is a `ScoringContext`: `judge` is None (no judge configured), a `JudgeSettings`,
    or a ready `JudgeClient`. The client is kept in `context.shared["judge_client"]`, so every
    judge metric of the run shares its cache, its concurrency and its token counts; the run
    reads `context.shared["judge_client"].stats` afterwards. `context.shared["cache_dir"]` and
    `["use_cache"]`, where the scoring run sets them, place and switch the request cache.
    """
    judge = getattr(context, "judge", None)
    if judge is None:
        return None
    if isinstance(judge, JudgeClient):
        return judge
    if not isinstance(judge, JudgeSettings):
        raise TypeError(f"ScoringContext.judge: a JudgeSettings or JudgeClient, not {type(judge).__name__}")
    shared = getattr(context, "shared", None)
    if shared is None:
        return JudgeClient(judge)
    client = shared.get(SHARED_KEY)
    if not isinstance(client, JudgeClient) or client.settings != judge:
        cache_dir = shared.get("cache_dir")
        client = JudgeClient(judge, cache_dir=Path(cache_dir) if cache_dir else None,
                             use_cache=shared.get("use_cache"))
        shared[SHARED_KEY] = client
    return client
