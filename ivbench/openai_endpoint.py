"""Which API key an OpenAI-compatible endpoint gets (the LLM judge, the cascade's remote LLM).

The key is read from an environment variable only, never from a flag or a file. A local
server (vLLM, llama.cpp, Ollama) takes no key, but the openai client insists on one: it gets a
placeholder; OpenAI's own API without a key is an error the caller words.
"""
from __future__ import annotations

import os
from typing import Optional

OPENAI_HOSTS = ("api.openai.com",)
PLACEHOLDER_KEY = "EMPTY"


def is_openai(endpoint: Optional[str]) -> bool:
    """Whether `endpoint` (None: the openai client's default) is OpenAI's own API."""
    return endpoint is None or any(host in endpoint for host in OPENAI_HOSTS)


def api_key(env_var: str, endpoint: Optional[str]) -> Optional[str]:
    """The key in `env_var`; the placeholder for an endpoint other than OpenAI's; None where
    OpenAI's API would get no key."""
    key = os.environ.get(env_var, "").strip()
    if key:
        return key
    return None if is_openai(endpoint) else PLACEHOLDER_KEY
