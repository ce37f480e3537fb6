"""The judge client: `ivbench.openai_endpoint.ChatEndpoint` against any OpenAI-compatible endpoint.

- one `ChatEndpoint` per client does the HTTP: streamed replies, `timeout` as the longest
  silence, retries with backoff, the key rule, the model check against `/models`, and
  stopping for good after 401/403/404, an unreachable server or an unknown model (every
  later judgement then fails at once with the same reason);
- judgements run concurrently in a thread pool (`concurrency` at once); identical requests in
  one batch are sent once;
- every completed judgement is cached in a SqliteCache keyed by
  `content_key(model, endpoint, messages, n, temperature, max_tokens)`, so a re-score makes no
  HTTP request and reads back the same replies and the same token usage;
- `stats` counts judgements, cache hits, errors, and (from the endpoint) HTTP requests,
  retries and tokens.
"""
from __future__ import annotations

import json
import random
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from collections.abc import Callable, Sequence

from ..cache import SqliteCache, content_key, default_cache_dir
from ..openai_endpoint import ChatEndpoint, EndpointStats, OptionNames, RequestFailed
from .settings import JudgeSettings

if TYPE_CHECKING:
    from ..scoring.context import ScoringContext

Messages = list[dict[str, str]]
CACHE_FILE = "judge.sqlite"
OPTION_NAMES = OptionNames(model="--judge-model", timeout="--judge-timeout", base_url="--judge-base-url")


def _add(total: Optional[int], more: Optional[int]) -> Optional[int]:
    return more if total is None else (total if more is None else total + more)


@dataclass
class JudgeReply:
    """The raw reply text of each sample (in order), the tokens it took, or why there is none."""

    texts: list[str] = field(default_factory=list)
    prompt_tokens: Optional[int] = None  # None: the endpoint did not report it
    completion_tokens: Optional[int] = None
    model: Optional[str] = None  # the model name the endpoint reported
    finish_reasons: list[Optional[str]] = field(default_factory=list)
    cached: bool = False
    retries: int = 0
    error: Optional[str] = None  # why the request failed: the same text for the same cause

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_cache(self) -> bytes:
        return json.dumps({"texts": self.texts, "prompt_tokens": self.prompt_tokens,
                           "completion_tokens": self.completion_tokens, "model": self.model,
                           "finish_reasons": self.finish_reasons},
                          sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_cache(cls, blob: bytes) -> JudgeReply:
        data = json.loads(blob)
        return cls(texts=list(data["texts"]), prompt_tokens=data.get("prompt_tokens"),
                   completion_tokens=data.get("completion_tokens"), model=data.get("model"),
                   finish_reasons=list(data.get("finish_reasons") or []), cached=True)


@dataclass
class JudgeStats:
    """What one run asked of the judge. Tokens count HTTP replies only (cache hits are free);
    HTTP requests, retries and tokens are the endpoint's own counts."""

    calls: int = 0  # judgements asked for
    cache_hits: int = 0  # served without a request (from the cache, or a duplicate in the batch)
    errors: int = 0  # judgements that failed after retries
    endpoint: EndpointStats = field(default_factory=EndpointStats)

    @property
    def http_requests(self) -> int:
        return self.endpoint.http_requests

    @property
    def retries(self) -> int:
        return self.endpoint.retries

    @property
    def prompt_tokens(self) -> int:
        return self.endpoint.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.endpoint.completion_tokens

    def to_json(self, settings: Optional[JudgeSettings] = None) -> dict[str, Any]:
        out: dict[str, Any] = {"calls": self.calls, "cache_hits": self.cache_hits, "errors": self.errors,
                               **self.endpoint.__dict__}
        out["cost_usd"] = None if settings is None else settings.cost(self.prompt_tokens, self.completion_tokens)
        return out


class JudgeClient:
    """Thread-safe; one per scoring run, shared by the judge metrics (see `shared_client`)."""

    def __init__(self, settings: JudgeSettings, cache: Optional[SqliteCache] = None, *,
                 cache_dir: Optional[Path] = None, use_cache: Optional[bool] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        self.settings = settings
        # The key is resolved now: a missing one fails at load time, not on the first request.
        self.endpoint = ChatEndpoint(settings.base_url, settings.model, key=settings.api_key(),
                                     timeout=settings.timeout, retries=settings.retries,
                                     backoff_base=settings.backoff_base, backoff_max=settings.backoff_max,
                                     names=OPTION_NAMES, sleep=sleep, jitter=jitter)
        if cache is None:
            folder = settings.cache_dir or cache_dir or default_cache_dir()
            enabled = settings.use_cache if use_cache is None else (use_cache and settings.use_cache)
            cache = SqliteCache(Path(folder) / CACHE_FILE, enabled=enabled)
        self.cache = cache
        self.stats = JudgeStats(endpoint=self.endpoint.stats)
        self._lock = threading.Lock()

    # -- public --------------------------------------------------------------------------

    def request_key(self, messages: Messages) -> str:
        s = self.settings
        return content_key(s.model, s.cache_endpoint(), messages, s.n, float(s.temperature), s.max_tokens)

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

    def count_cached(self, judgements: int) -> None:
        """Judgements this score took from the score cache (the scoring phase's, keyed by the
        whole prompt) without asking this client: judgements of the run all the same."""
        self._count(calls=judgements, cache_hits=judgements)

    def close(self) -> None:
        self.endpoint.close()
        self.cache.close()

    # -- internals -----------------------------------------------------------------------

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)

    def _params(self, n: int) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {"temperature": float(s.temperature)}
        if n > 1:
            params["n"] = n
        if s.max_tokens is not None:
            params["max_tokens"] = s.max_tokens
        return params

    def _complete(self, messages: Messages, key: str) -> JudgeReply:
        blob = self.cache.get(key)
        if blob is not None:
            self._count(cache_hits=1)
            return JudgeReply.from_cache(blob)
        reply = JudgeReply()
        try:
            # An endpoint may return fewer choices than `n` (llama.cpp and Ollama may ignore
            # `n`): ask again for the rest, at most n times.
            for _ in range(self.settings.n):
                missing = self.settings.n - len(reply.texts)
                if missing <= 0:
                    break
                completion = self.endpoint.chat(messages, self._params(missing))
                reply.retries += completion.retries
                reply.texts += completion.texts[:missing]
                reply.finish_reasons += completion.finish_reasons[:missing]
                reply.prompt_tokens = _add(reply.prompt_tokens, completion.prompt_tokens)
                reply.completion_tokens = _add(reply.completion_tokens, completion.completion_tokens)
                reply.model = reply.model or completion.model
            if len(reply.texts) < self.settings.n:
                raise RequestFailed(f"the endpoint returned {len(reply.texts)} of {self.settings.n} samples")
        except RequestFailed as exc:
            self._count(errors=1)
            reply.texts, reply.finish_reasons = [], []
            reply.retries += exc.retries
            reply.error = exc.reason
            return reply
        self.cache.put(key, reply.to_cache())
        return reply


def preflight(settings: JudgeSettings, *, warn_unreachable: bool = True) -> None:
    """What can be checked of a judge before a long generation: its key (the key rule) and, where
    the server lists its models, that it serves the model. Raises ConfigError / EndpointError. A
    server that cannot be reached now is not an error (it may be started while the systems run),
    but is warned about, so the user knows before the generation rather than after it."""
    endpoint = ChatEndpoint(settings.base_url, settings.model, key=settings.api_key(),
                            timeout=min(settings.timeout, 10.0), retries=0, names=OPTION_NAMES)
    try:
        endpoint.check_model()
    finally:
        endpoint.close()
    if warn_unreachable and endpoint.unreachable_at_check:
        warnings.warn(f"the judge cannot be reached now ({endpoint.unreachable_at_check}); generating anyway: "
                      "start it before the scoring begins, or score later with `ivbench score RUN`", stacklevel=2)


def shared_client(context: ScoringContext) -> Optional[JudgeClient]:
    """The scoring run's one judge client, made on first use from `context.judge`.

    `context.judge` is None (no judge configured), a `JudgeSettings`, or a ready `JudgeClient`.
    The client made from settings is kept in `context.judge_client`, so every judge metric of
    the run shares its cache, its concurrency and its token counts; the run reads its `stats`
    afterwards. `context.cache_dir` and `context.use_cache`, where the scoring run sets them,
    place and switch the request cache.
    """
    judge = context.judge
    if judge is None:
        return None
    if isinstance(judge, JudgeClient):
        return judge
    if not isinstance(judge, JudgeSettings):
        raise TypeError(f"ScoringContext.judge: a JudgeSettings or JudgeClient, not {type(judge).__name__}")
    client = context.judge_client
    if client is None or client.settings != judge:
        client = JudgeClient(judge, cache_dir=context.cache_dir, use_cache=context.use_cache)
        context.judge_client = client
    return client
