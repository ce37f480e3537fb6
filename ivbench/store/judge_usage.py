"""judge.json: what the scoring phase asked of the LLM judge (docs/architecture.md, "The run directory").

The judge's settings as `JudgeSettings.to_json()` gives them (model, endpoint, sampling, prices;
never the key) and its usage as `JudgeStats.to_json()` counts it (judgements, cache hits,
errors, HTTP requests, retries, tokens, cost). Scoring writes it beside scores.jsonl, which it
describes, so that scoring never rewrites manifest.json (eval's file); a score that asked
nothing of a judge removes an older one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import RunDirError
from . import formats
from .run_store import write_json_atomic

JUDGE = "judge.json"


@dataclass
class JudgeUsage:
    settings: dict[str, Any]  # JudgeSettings.to_json()
    usage: dict[str, Any]  # JudgeStats.to_json(settings)

    @property
    def model(self) -> Optional[str]:
        model = self.settings.get("model")
        return str(model) if model else None

    def describe(self) -> str:
        """One line for people: the model, what it was asked, the tokens and the cost."""
        u = self.usage
        cost = u.get("cost_usd")
        parts = [f"{u.get('calls', 0)} judgements ({u.get('cache_hits', 0)} from the cache, "
                 f"{u.get('errors', 0)} failed)",
                 f"{u.get('http_requests', 0)} HTTP requests ({u.get('retries', 0)} retries)",
                 f"{u.get('prompt_tokens', 0)} prompt + {u.get('completion_tokens', 0)} completion tokens",
                 f"${float(cost):.4f}" if isinstance(cost, (int, float)) else "cost unknown (no prices given)"]
        return f"{self.model or 'unknown model'}: " + ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return formats.stamp({"settings": self.settings, "usage": self.usage}, formats.JUDGE_FORMAT)


def write_judge_usage(run_dir: Path, judge: JudgeUsage) -> None:
    write_json_atomic(Path(run_dir) / JUDGE, judge.to_json())


def remove_judge_usage(run_dir: Path) -> None:
    (Path(run_dir) / JUDGE).unlink(missing_ok=True)


def read_judge_usage(run_dir: Path) -> Optional[JudgeUsage]:
    """The run's judge usage; None when no scoring of it asked a judge."""
    path = Path(run_dir) / JUDGE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc}); the file was edited or damaged: "
                          "re-run `ivbench score` to rewrite it") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not a JSON object; the file was edited or damaged: "
                          "re-run `ivbench score` to rewrite it")
    data = formats.check(data, formats.JUDGE_FORMAT, str(path))
    settings, usage = data.get("settings"), data.get("usage")
    if not isinstance(settings, dict) or not isinstance(usage, dict):
        raise RunDirError(f"{path}: `settings` and `usage` must be JSON objects; the file was edited or "
                          "damaged: re-run `ivbench score` to rewrite it")
    return JudgeUsage(settings=settings, usage=usage)
