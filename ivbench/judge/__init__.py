"""The LLM judge: settings, an OpenAI-compatible client with retries and a cache, and prompts.

`JudgeSettings` says how to reach the judge (the key only from the environment);
`JudgeClient` sends prompts concurrently through `ivbench.openai_endpoint.ChatEndpoint`
(streamed replies, retries with backoff, the key rule, fail-fast on a dead server or a wrong
key or model), caches every reply (SQLite) and counts tokens; `ivbench.judge.prompts` renders
and parses the prompts. The metrics that use them are in `ivbench.metrics.judge`. Importing
this package imports no HTTP client library and no yaml.
"""
from typing import Any

from .settings import JudgeConfigError, JudgeSettings


def __getattr__(name: str) -> Any:
    # The client (HTTP, caches) loads on first use: the command line reads JudgeSettings' fields
    # to make its flags, and `ivbench --help` must not pay for the rest.
    if name in ("JudgeClient", "JudgeReply", "JudgeStats", "shared_client"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["JudgeClient", "JudgeConfigError", "JudgeReply", "JudgeSettings", "JudgeStats", "shared_client"]
