"""How to reach the LLM judge: model, endpoint, sampling, retries, prices
(docs/architecture.md, "OpenAI-compatible endpoints").

The API key is read from the environment only, never from a flag or a file, and it is never
part of an identity, a cache key, a manifest or a result. Which variable, and whether the
endpoint gets a key at all, is the rule of `ivbench.openai_endpoint.api_key`: OPENAI_API_KEY
goes to OpenAI's API only; another endpoint gets the variable named by `api_key_env`
(--judge-api-key-env), else $IVBENCH_JUDGE_API_KEY, else no key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..openai_endpoint import BASE_URL_ENV, api_key, is_openai, resolve_base_url, token_cost

JUDGE_KEY_ENV = "IVBENCH_JUDGE_API_KEY"


class JudgeConfigError(ConfigError):
    """A judge configuration that cannot work, with what to do about it."""


def _flag(flag: str, help: str, **click: Any) -> dict[str, Any]:
    """A JudgeSettings field's command-line flag (`ivbench eval` and `ivbench score`)."""
    return {"flag": flag, "help": help, "click": click}


@dataclass(frozen=True)
class JudgeSettings:
    """The judge's options, declared once: each field is a key of the run YAML's `judge:` mapping
    and, where its metadata names one, a command-line flag."""

    model: str = field(metadata=_flag("--judge-model", "LLM judge model name (OpenAI-compatible endpoint)."))
    base_url: Optional[str] = field(default=None, metadata=_flag(
        "--judge-base-url", "Judge endpoint, e.g. http://127.0.0.1:8080/v1 (vLLM, llama.cpp, Ollama). "
                            "Default: $OPENAI_BASE_URL, else OpenAI's API."))
    api_key_env: Optional[str] = field(default=None, metadata=_flag(
        "--judge-api-key-env", "Environment variable holding the judge's API key. Default: $OPENAI_API_KEY for "
                               "OpenAI's API only; another endpoint gets $IVBENCH_JUDGE_API_KEY, else no key.",
        metavar="NAME"))
    # Samples per judgement; the result is the mean of the parseable ones.
    n: int = field(default=1, metadata=_flag("--judge-samples", "Judge samples per judgement (their mean).",
                                             type=("int", 1)))
    temperature: float = field(default=0.0, metadata=_flag("--judge-temperature", "Judge sampling temperature.",
                                                           type=("float", 0)))
    # FastChat's MT-Bench judge uses 2048.
    max_tokens: Optional[int] = field(default=2048, metadata=_flag(
        "--judge-max-tokens", "Longest judge reply, in tokens; a reply cut there before its rating fails and says so.",
        type=("int", 1)))
    concurrency: int = field(default=4, metadata=_flag(
        "--judge-concurrency", "Judge requests at once (a server that answers one at a time gains nothing from more).",
        type=("int", 1)))
    # Further attempts after a retryable status (openai_endpoint.RETRYABLE_STATUS, 5xx), silence or a lost connection.
    retries: int = field(default=5, metadata=_flag(
        "--judge-retries", "Judge retries, with exponential backoff, after a 408, 409, 429 or 5xx answer, a silence "
        "past --judge-timeout or a lost connection.", type=("int", 0)))
    # The longest silence (seconds) before a request is given up and tried again: to connect,
    # before the first streamed token, between two tokens; not the length of the whole reply.
    timeout: float = field(default=120.0, metadata=_flag(
        "--judge-timeout", "Seconds of silence (no connection, no first token, no next token) before a judge "
                           "request is given up and retried; a slow reply that keeps streaming is never cut.",
        type=("float", 0)))
    # USD per 1M tokens; None: no cost line.
    price_in: Optional[float] = field(default=None, metadata=_flag(
        "--judge-price-in", "Judge price per 1M input tokens (for the cost line).", type=("float", 0)))
    price_out: Optional[float] = field(default=None, metadata=_flag(
        "--judge-price-out", "Judge price per 1M output tokens.", type=("float", 0)))
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
        for name in ("price_in", "price_out"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise JudgeConfigError(f"judge {name}: USD per 1M tokens, a number >= 0, not {value!r}")
                object.__setattr__(self, name, float(value))
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

    @property
    def prices(self) -> Optional[tuple[float, float]]:
        """(input, output) USD per 1M tokens; None when neither is given."""
        if self.price_in is None and self.price_out is None:
            return None
        return (self.price_in or 0.0, self.price_out or 0.0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Optional[float]:
        return token_cost(self.prices, prompt_tokens, completion_tokens)

    def to_json(self) -> dict[str, Any]:
        """For judge.json: everything except the key (the variable it comes from is named)."""
        return {**self.identity(), "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                "retries": self.retries, "timeout": self.timeout,
                "prices_per_mtok": list(self.prices) if self.prices else None}


def flag_fields() -> list[Any]:
    """JudgeSettings' fields that have a command-line flag (their click parameter is `judge_<name>`)."""
    return [f for f in fields(JudgeSettings) if "flag" in f.metadata]


def judge_from_flags(settings: Optional[JudgeSettings], given: dict[str, Any]) -> Optional[JudgeSettings]:
    """`settings` (from a run YAML, or None) with the judge flags the user gave read over them;
    None when neither names a judge model."""
    changes = {f.name: given[f"judge_{f.name}"] for f in flag_fields() if f"judge_{f.name}" in given}
    if not changes:
        return settings
    if settings is None:
        if "model" not in changes:
            raise JudgeConfigError(f"--{'/--'.join(sorted('judge-' + k.replace('_', '-') for k in changes))} "
                                   "given without a judge: name its model with --judge-model")
        return JudgeSettings(**changes)
    return replace(settings, **changes)
