"""The suites' own judge prompts (ivbench/judge/prompts/suites.jsonl, see its NOTICE.md), rendered
as their authors do: plain string replacement of each placeholder, in order."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from ..judge.prompts import HERE as PROMPT_DIR

PROMPTS_FILE = Path(PROMPT_DIR) / "suites.jsonl"
Messages = list[dict[str, str]]


@lru_cache(maxsize=1)
def prompts() -> dict[str, dict[str, str]]:
    out = {}
    with open(PROMPTS_FILE, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[row["name"]] = row
    return out


@lru_cache(maxsize=1)
def version() -> str:
    """A hash of every suite prompt's text: part of the judge metrics' cache identity."""
    return hashlib.sha256(PROMPTS_FILE.read_bytes()).hexdigest()[:12]


def render(name: str, values: dict[str, str]) -> Messages:
    """The messages of prompt `name` with each ``{key}`` replaced by ``values[key]``, in order."""
    prompt = prompts()[name]
    user = prompt["user"]
    for key, value in values.items():
        user = user.replace("{" + key + "}", value)
    messages = [{"role": "system", "content": prompt["system"]}] if prompt["system"] else []
    return messages + [{"role": "user", "content": user}]
