"""How to reach the LLM judge: model, endpoint, sampling, retries, prices (docs/architecture.md, "Judge").

The API key is read from the environment only, never from a flag or a file, and it is never
part of an identity, a cache key, a manifest or a result. Which variable, and whether the
endpoint gets a key at all, is the rule of `ivbench.openai_endpoint.api_key`: OPENAI_API_KEY
goes to OpenAI's API only; another endpoint gets the variable named by `api_key_env`
(--judge-api-key-env), else $IVBENCH_JUDGE_API_KEY, else no key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..openai_endpoint import BASE_URL_ENV, api_key, is_openai, resolve_base_url, token_cost

JUDGE_KEY_ENV = "IVBENCH_JUDGE_API_KEY"


class JudgeConfigError(ConfigError):
    """A judge configuration that cannot work, with what to do about it."""


@dataclass(frozen=True)
class JudgeSettings:
    model: str
    base_url: Optional[str] = None  # None: $OPENAI_BASE_URL, else OpenAI's API
    api_key_env: Optional[str] = None  # None: the key rule's default (see the module docstring)
    n: int = 1  # samples per judgement; the result is the mean of the parseable ones
    temperature: float = 0.0
    max_tokens: Optional[int] = 2048  # FastChat's MT-Bench judge uses 2048
    concurrency: int = 4  # requests in flight at once
    retries: int = 5  # further attempts after a 429, a 5xx, a timeout or a connection error
    # The longest silence (seconds) before a request is given up and tried again: to connect,
    # before the first streamed token, between two tokens; not the length of the whole reply.
    timeout: float = 120.0
    # USD per 1M (input, output) tokens; None: no cost line.
    prices: Optional[tuple[float, float]] = None
    backoff_base: float = 1.0  # seconds before the first retry; doubles each time, with jitter
    backoff_max: float = 60.0
    cache_dir: Optional[Path] = None  # None: the scoring context's, else ivbench's cache folder
    use_cache: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise JudgeConfigError("judge model: give a model name (--judge-model)")
        self._check_numbers()
        if self.api_key_env is not None and (not isinstance(self.api_key_env, str) or not self.api_key_env.strip()):
            raise JudgeConfigError(f"judge api_key_env: the name of an environment variable, not {self.api_key_env!r}")
        if self.prices is not None:
            prices = tuple(self.prices)
            if len(prices) != 2 or any(p is None or float(p) < 0 for p in prices):
                raise JudgeConfigError(f"judge prices: (input, output) USD per 1M tokens, both >= 0, "
                                       f"not {self.prices!r}")
            object.__setattr__(self, "prices", (float(prices[0]), float(prices[1])))
        if self.base_url is not None:
            object.__setattr__(self, "base_url", str(self.base_url).rstrip("/"))
            try:
                resolve_base_url(self.base_url)
            except ConfigError as exc:
                raise JudgeConfigError(f"judge base_url: {exc}") from None
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    def _check_numbers(self) -> None:
        for name, low in (("n", 1), ("concurrency", 1), ("retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise JudgeConfigError(f"judge {name}: must be an integer >= {low}, not {value!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise JudgeConfigError(f"judge max_tokens: must be a positive integer or None, not {self.max_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise JudgeConfigError(f"judge temperature: must be in [0, 2], not {self.temperature!r}")
        if not isinstance(self.timeout, (int, float)) or isinstance(self.timeout, bool) or self.timeout <= 0:
            raise JudgeConfigError(f"judge timeout: seconds, more than 0, not {self.timeout!r}")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise JudgeConfigError("judge backoff times must be >= 0")

    @property
    def endpoint(self) -> str:
        """The URL requests go to: `base_url`, else $OPENAI_BASE_URL, else OpenAI's API."""
        return resolve_base_url(self.base_url)

    @property
    def is_openai(self) -> bool:
        return is_openai(self.endpoint)

    def api_key(self) -> Optional[str]:
        """The key this endpoint gets from the environment, or None (it gets none)."""
        try:
            return api_key(self.endpoint, self.api_key_env, JUDGE_KEY_ENV, what=f"judge {self.model!r}",
                           option="--judge-api-key-env")
        except ConfigError as exc:
            raise JudgeConfigError(str(exc)) from None

    def cache_endpoint(self) -> Optional[str]:
        """The endpoint as the cache keys name it: `base_url`, or $OPENAI_BASE_URL where that
        moves the default; None for OpenAI's API by default (keys made before stay valid)."""
        return self.base_url or os.environ.get(BASE_URL_ENV, "").strip().rstrip("/") or None

    def identity(self) -> dict[str, Any]:
        """What determines a judge reply: part of every judge cache key (never the key)."""
        return {"model": self.model, "base_url": self.cache_endpoint(), "n": self.n,
                "temperature": float(self.temperature), "max_tokens": self.max_tokens}

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Optional[float]:
        return token_cost(self.prices, prompt_tokens, completion_tokens)

    def to_json(self) -> dict[str, Any]:
        """For the run manifest: everything except the key (the variable it comes from is named)."""
        return {**self.identity(), "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                "retries": self.retries, "timeout": self.timeout,
                "prices_per_mtok": list(self.prices) if self.prices else None}
