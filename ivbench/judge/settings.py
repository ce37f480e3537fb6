"""How to reach the LLM judge: model, endpoint, sampling, retries, prices (DESIGN.md, Judge).

The API key is read from the environment only (`api_key_env`), never from a flag or a file,
and it is never part of an identity, a cache key, a manifest or a result.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..openai_endpoint import api_key, is_openai



class JudgeConfigError(ConfigError):
    """A judge configuration that cannot work, with what to do about it."""


@dataclass(frozen=True)
class JudgeSettings:
    model: str
    base_url: Optional[str] = None  # None: the openai client's default (api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"
    n: int = 1  # samples per judgement; the result is the mean of the parseable ones
    temperature: float = 0.0
    max_tokens: Optional[int] = 2048  # FastChat's MT-Bench judge uses 2048
    concurrency: int = 4  # requests in flight at once
    retries: int = 5  # further attempts after a 429, a 5xx, a timeout or a connection error
    timeout: float = 120.0  # seconds per HTTP request
    # USD per 1M (input, output) tokens; None: no cost line.
    prices: Optional[tuple[float, float]] = None
    backoff_base: float = 1.0  # seconds before the first retry; doubles each time, with jitter
    backoff_max: float = 60.0
    cache_dir: Optional[Path] = None  # None: the scoring context's, else ivbench's cache folder
    use_cache: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise JudgeConfigError("judge model: give a model name (--judge-model)")
        for name, low in (("n", 1), ("concurrency", 1), ("retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise JudgeConfigError(f"judge {name}: must be an integer >= {low}, not {value!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise JudgeConfigError(f"judge max_tokens: must be a positive integer or None, not {self.max_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise JudgeConfigError(f"judge temperature: must be in [0, 2], not {self.temperature!r}")
        if self.timeout <= 0 or self.backoff_base < 0 or self.backoff_max < 0:
            raise JudgeConfigError("judge timeout must be > 0 and backoff times >= 0")
        if self.prices is not None:
            prices = tuple(self.prices)
            if len(prices) != 2 or any(p is None or float(p) < 0 for p in prices):
                raise JudgeConfigError(f"judge prices: (input, output) USD per 1M tokens, both >= 0, "
                                       f"not {self.prices!r}")
            object.__setattr__(self, "prices", (float(prices[0]), float(prices[1])))
        if self.base_url is not None:
            object.__setattr__(self, "base_url", str(self.base_url).rstrip("/"))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    @property
    def is_openai(self) -> bool:
        return is_openai(self.base_url)

    def api_key(self) -> str:
        """The key from the environment; a placeholder for an endpoint other than OpenAI's."""
        key = api_key(self.api_key_env, self.base_url)
        if key is not None:
            return key
        raise JudgeConfigError(
            f"judge {self.model!r} at {self.base_url or 'api.openai.com'}: no API key. Set the "
            f"environment variable {self.api_key_env} (the key is read from the environment only; "
            "--judge-api-key-env names another variable), or give --judge-base-url for a local "
            "OpenAI-compatible server that needs no key")

    def identity(self) -> dict[str, Any]:
        """What determines a judge reply: part of every judge cache key (never the key)."""
        return {"model": self.model, "base_url": self.base_url, "n": self.n,
                "temperature": float(self.temperature), "max_tokens": self.max_tokens}

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Optional[float]:
        if self.prices is None:
            return None
        return (prompt_tokens * self.prices[0] + completion_tokens * self.prices[1]) / 1e6

    def to_json(self) -> dict[str, Any]:
        """For the run manifest: everything except the key (and where the key comes from)."""
        return {**self.identity(), "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                "retries": self.retries, "timeout": self.timeout,
                "prices_per_mtok": list(self.prices) if self.prices else None}
