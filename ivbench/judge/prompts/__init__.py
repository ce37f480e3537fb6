"""Judge prompts: what the judge reads and how its reply is parsed.

Four prompts, by name:

- ``llama-omni`` (default): LLaMA-Omni's single 1–5 score (helpfulness, relevance, fluency,
  suitability for speech interaction) from the transcripts of instruction and response;
  reply parsed from ``Score: N``;
- ``content-style``: two 1–5 scores, ``Content: N`` and ``Style: N``;
- ``mt-bench``: FastChat's single-answer 1–10 grading, reference-guided for math, reasoning
  and coding when the turn has a reference, multi-turn templates after the first turn; reply
  parsed from ``[[N]]``;
- ``dialogue``: one 1–5 score for a whole conversation; ``Score: N``.

A prompt renders from plain text (`Exchange`: question, answer, reference), knows nothing of
records or audio, and parses a reply into its fields, or None when the reply has no parseable
rating (a parse failure, never a 0). The texts are data files next to this module (see
NOTICE.md); a prompt's version is its declared version plus a hash of its texts.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Optional
from collections.abc import Sequence

from ...errors import ConfigError

HERE = Path(__file__).resolve().parent
NEED_REF_CATEGORIES = frozenset({"math", "reasoning", "coding"})  # FastChat's NEED_REF_CATS
NO_REPLY = "(no reply)"

_NUMBER = r"(\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class Exchange:
    """One turn as the judge reads it: what the user said, what the assistant answered."""

    question: str
    answer: str
    reference: Optional[str] = None


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str

    def render(self, **values: str) -> list[dict[str, str]]:
        messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.user.format(**values)})
        return messages


@dataclass(frozen=True)
class Rendered:
    prompt: str  # the prompt's name
    template: str  # the template used (mt-bench has four)
    messages: list[dict[str, str]]


def _version(declared: Any, templates: Sequence[Template]) -> str:
    text = json.dumps([[t.name, t.system, t.user] for t in templates], sort_keys=True)
    return f"{declared}+{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def _last_number(pattern: str, text: str, low: float, high: float) -> Optional[float]:
    matches = re.findall(pattern, text, flags=re.IGNORECASE)
    if not matches:
        return None
    value = float(matches[-1])
    return value if low <= value <= high else None


# "Score: 4", "**Score:** 4", "score = 4", "Score: 4/5", "Rating: 4"
def _labelled(label: str) -> str:
    return rf"\b(?:{label})\b\s*\**\s*[:=]\s*\**\s*{_NUMBER}(?!\.?\d)"


class JudgePrompt:
    """A named prompt: renders messages, parses replies into `fields` on `scale`."""

    name: ClassVar[str] = ""
    level: ClassVar[str] = "turn"  # or "dialogue"
    fields: ClassVar[tuple[str, ...]] = ("score",)
    scale: ClassVar[tuple[float, float]] = (1.0, 5.0)
    history_turns: ClassVar[Optional[int]] = None  # earlier turns it reads; None: all of them
    reply_format: ClassVar[str] = "Score: N"

    def __init__(self, templates: dict[str, Template], declared_version: Any = 1) -> None:
        self.templates = templates
        self.version = _version(declared_version, list(templates.values()))

    def render(self, turn: Exchange, history: Sequence[Exchange] = (),
               category: Optional[str] = None) -> Rendered:
        raise NotImplementedError

    def render_dialogue(self, turns: Sequence[Exchange]) -> Rendered:
        raise NotImplementedError(f"prompt {self.name!r} judges single turns, not dialogues")

    def parse(self, reply: str) -> Optional[dict[str, float]]:
        value = _last_number(_labelled("score|rating"), reply or "", *self.scale)
        return None if value is None else {"score": value}


def _history_block(history: Sequence[Exchange]) -> str:
    if not history:
        return ""
    lines = ["", "[Earlier in the conversation, for context only: rate the last reply alone]"]
    for exchange in history:
        lines += [f"User: {exchange.question}", f"Assistant: {exchange.answer}"]
    return "\n".join(lines) + "\n"


class LlamaOmniPrompt(JudgePrompt):
    name = "llama-omni"

    def render(self, turn: Exchange, history: Sequence[Exchange] = (),
               category: Optional[str] = None) -> Rendered:
        template = self.templates[self.name]
        return Rendered(self.name, template.name,
                        template.render(question=turn.question, answer=turn.answer,
                                        history=_history_block(history)))


class ContentStylePrompt(LlamaOmniPrompt):
    name = "content-style"
    fields = ("score", "content", "style")  # score = mean of content and style
    reply_format = "Content: N / Style: N"

    def parse(self, reply: str) -> Optional[dict[str, float]]:
        content = _last_number(_labelled("content(?: score)?"), reply or "", *self.scale)
        style = _last_number(_labelled("style(?: score)?"), reply or "", *self.scale)
        if content is None or style is None:
            return None
        return {"score": (content + style) / 2.0, "content": content, "style": style}


class MtBenchPrompt(JudgePrompt):
    name = "mt-bench"
    scale = (1.0, 10.0)
    history_turns = 1  # the multi-turn templates show the turn before this one
    reply_format = "[[N]]"

    def render(self, turn: Exchange, history: Sequence[Exchange] = (),
               category: Optional[str] = None) -> Rendered:
        guided = (category or "").lower() in NEED_REF_CATEGORIES
        if history:
            first = history[-1]
            if guided and first.reference and turn.reference:
                t = self.templates["single-math-v1-multi-turn"]
                messages = t.render(question_1=first.question, answer_1=first.answer,
                                    ref_answer_1=first.reference, question_2=turn.question,
                                    answer_2=turn.answer, ref_answer_2=turn.reference)
            else:
                t = self.templates["single-v1-multi-turn"]
                messages = t.render(question_1=first.question, answer_1=first.answer,
                                    question_2=turn.question, answer_2=turn.answer)
        elif guided and turn.reference:
            t = self.templates["single-math-v1"]
            messages = t.render(question=turn.question, answer=turn.answer, ref_answer_1=turn.reference)
        else:
            t = self.templates["single-v1"]
            messages = t.render(question=turn.question, answer=turn.answer)
        return Rendered(self.name, t.name, messages)

    def parse(self, reply: str) -> Optional[dict[str, float]]:
        # FastChat reads "[[N]]", falling back to "[N]"; the last one counts here, since a
        # judge may quote the format ("Rating: [[5]]") before giving its own.
        text = reply or ""
        for pattern in (rf"\[\[\s*{_NUMBER}\s*\]\]", rf"\[\s*{_NUMBER}\s*\]"):
            if re.search(pattern, text):
                value = _last_number(pattern, text, *self.scale)
                return None if value is None else {"score": value}
        return None


class DialoguePrompt(JudgePrompt):
    name = "dialogue"
    level = "dialogue"

    def render_dialogue(self, turns: Sequence[Exchange]) -> Rendered:
        template = self.templates[self.name]
        blocks = [f"Turn {i}\nUser: {t.question}\nAssistant: {t.answer}" for i, t in enumerate(turns, start=1)]
        return Rendered(self.name, template.name, template.render(conversation="\n\n".join(blocks) + "\n"))


def _template_from(entry: dict[str, Any], name: str, where: str) -> Template:
    try:
        return Template(name, str(entry["system"]), str(entry["user"]))
    except KeyError as exc:
        raise ValueError(f"{where}: prompt {name!r} lacks {exc}") from None


@lru_cache(maxsize=1)
def _load() -> dict[str, JudgePrompt]:
    import yaml

    path = HERE / "ivbench.yaml"
    own = yaml.safe_load(path.read_text(encoding="utf-8"))
    prompts: dict[str, JudgePrompt] = {}
    for cls in (LlamaOmniPrompt, ContentStylePrompt, DialoguePrompt):
        entry = own[cls.name]
        prompts[cls.name] = cls({cls.name: _template_from(entry, cls.name, str(path))}, entry.get("version", 1))
    mt: dict[str, Template] = {}
    with open(HERE / "mt_bench.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                data = json.loads(line)
                mt[data["name"]] = Template(data["name"], data["system_prompt"], data["prompt_template"])
    prompts[MtBenchPrompt.name] = MtBenchPrompt(mt, "fastchat")
    return prompts


TURN_PROMPTS = ("llama-omni", "content-style", "mt-bench")
DIALOGUE_PROMPTS = ("dialogue",)


def prompt_names(level: str = "turn") -> tuple[str, ...]:
    """The names of the prompts of a level ("turn" or "dialogue"), without reading their texts."""
    return TURN_PROMPTS if level == "turn" else DIALOGUE_PROMPTS


def get_prompt(name: str, level: str = "turn") -> JudgePrompt:
    """The prompt called `name`; a name that is unknown or of the wrong level lists the known ones."""
    known = prompt_names(level)
    if name not in known:
        raise ConfigError(f"unknown {level}-level judge prompt {name!r}: use one of {', '.join(known)}")
    return _load()[name]
