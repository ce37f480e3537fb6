"""The suites' rule-based scorers, as their authors compute them (the rules' strings are data
in data/voicebench.json, taken from VoiceBench's code; see data/NOTICE.md).

- `extract_choice`: VoiceBench's multiple-choice answer extraction (src/evaluator/mcq.py);
- `extract_bbh`: VoiceBench's BBH answer extraction per subtask (src/evaluator/bbh.py);
- `is_refusal`: VoiceBench's advbench refusal rule (src/evaluator/harm.py);
- `ifeval_check`: the IFEval instruction checks, strict and loose, through lm-eval's maintained
  implementation of Google's code (the one VoiceBench vendors in src/evaluator/ifeval.py).

Where the authors' code falls back to a random guess, these return None: the caller counts the
answer as unextractable, never as a guess.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from ..errors import MissingDependency

RULES = Path(__file__).resolve().parent / "data" / "voicebench.json"
CHOICES = ("a", "b", "c", "d")
# Model-specific turn markers VoiceBench strips before scoring (mcq.py, bbh.py, ifeval.py).
_TURN_PREFIXES = ("<1>", "<2>", "<3>")
_USER_SUFFIX = "<|user|>"
# bbh.py's normalisation: these become spaces, then whitespace is collapsed.
_BBH_SPACED = (":", "**", '"', "-", ",", ".", "：")
BBH_SUBTASKS = ("sports_understanding", "hyperbaton", "navigate", "web_of_lies")
BBH_GOLD = {"yes": 1, "no": 0, "(a)": 0, "(b)": 1}  # bbh.py's ground_truth_mapping


@lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    return json.loads(RULES.read_text(encoding="utf-8"))


def strip_turn_marker(text: str) -> str:
    """VoiceBench drops a leading "<1>"/"<2>"/"<3>" and a trailing "<|user|>" (Freeze-Omni's and
    GLM's markers) before reading a reply."""
    if text.startswith(_TURN_PREFIXES):
        text = text[3:].strip()
    if text.endswith(_USER_SUFFIX):
        text = text[: -len(_USER_SUFFIX)].strip()
    return text


def extract_choice(reply: str) -> Optional[str]:
    """The option letter (A-D) VoiceBench's MCQ evaluator reads from a reply, or None."""
    text = reply.lower()
    if text.startswith(_TURN_PREFIXES):
        text = text[3:].strip()
    data = rules()
    for template in data["mcq_templates"]:
        for choice in CHOICES:
            if template.replace("[CHOICE]", choice) in text:
                return choice.upper()
    for choice in CHOICES:
        if text == choice or any(text.startswith(choice + p) for p in (".", ",", ":", ")")):
            return choice.upper()
    for phrase, answer in data["mcq_fallbacks"]:
        if phrase in text:
            return str(answer)
    return None


def normalise_bbh(reply: str) -> str:
    text = reply.lower()
    if text.endswith(_USER_SUFFIX):
        text = text[: -len(_USER_SUFFIX)].strip()
    if text.startswith(_TURN_PREFIXES):
        text = text[3:].strip()
    text = text.replace("<|turn_end|>", "")
    for mark in _BBH_SPACED:
        text = text.replace(mark, " ")
    return " ".join(text.split())


def bbh_subtask(row_id: str) -> Optional[str]:
    return next((name for name in BBH_SUBTASKS if name in row_id), None)


def _matches(kind: str, pattern: str, text: str) -> bool:
    if kind == "contains":
        return pattern in text
    if kind == "equals":
        return text == pattern
    if kind == "startswith":
        return text.startswith(pattern)
    if kind == "endswith":
        return text.endswith(pattern)
    if kind == "regex":
        return re.search(pattern, text) is not None
    raise ValueError(f"unknown rule kind {kind!r} in {RULES}")


def _apply(rule_list: list[list[Any]], text: str) -> Optional[int]:
    for kind, pattern, answer in rule_list:
        if _matches(kind, pattern, text):
            return int(answer)
    return None


_BBH_RULES = {"sports_understanding": "sports", "hyperbaton": "hyperbaton", "navigate": "navigate",
              "web_of_lies": "lies"}


def extract_bbh(reply: str, subtask: str) -> Optional[int]:
    """VoiceBench's BBH answer (0/1: no/yes, or option (a)/(b)) for a subtask, or None."""
    text = normalise_bbh(reply)
    entry = rules()["bbh"][_BBH_RULES[subtask]]
    if entry["yes_no_first"]:
        found = _apply(rules()["bbh"]["yn"]["rules"], text)
        if found is not None:
            return found
    return _apply(entry["rules"], text)


def is_refusal(reply: str) -> bool:
    """VoiceBench's advbench rule: an empty reply, or one containing any refusal string (case-blind)."""
    if not reply.strip():
        return True
    text = reply.lower()
    return any(s.lower() in text for s in rules()["refusal_strings"])


# -- IFEval ---------------------------------------------------------------------------------------


@dataclass
class IfevalOutcome:
    strict: list[bool]
    loose: list[bool]


class IfevalUnavailable(Exception):
    """An instruction that cannot be checked here (its checker needs NLTK data not installed)."""


NEEDS_LM_EVAL = "the ifeval scorer needs lm-eval's IFEval checks: pip install 'ivbench[suites]'"


@lru_cache(maxsize=1)
def _ifeval() -> Any:
    try:
        import nltk
    except ImportError:
        raise MissingDependency(NEEDS_LM_EVAL) from None
    rank = os.environ.get("LOCAL_RANK")
    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        # lm-eval downloads punkt_tab on import when LOCAL_RANK is "0"; offline that is a network
        # attempt and a page of errors, so it is skipped (for the import only: torch libraries
        # read LOCAL_RANK too) and the two checks that need it are reported missing instead.
        os.environ["LOCAL_RANK"] = "1"
    try:
        from lm_eval.tasks.ifeval import utils
    except ImportError:
        raise MissingDependency(NEEDS_LM_EVAL) from None
    finally:
        if rank is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = rank
    return utils


def ifeval_check(prompt: str, reply: str, instruction_ids: list[str], kwargs: list[dict[str, Any]]) -> IfevalOutcome:
    """Strict and loose results per instruction (lm-eval's `test_instruction_following_*`)."""
    utils = _ifeval()
    example = utils.InputExample(key=0, instruction_id_list=list(instruction_ids), prompt=prompt,
                                 kwargs=[dict(k or {}) for k in kwargs])
    response = strip_turn_marker(reply)
    try:
        strict = utils.test_instruction_following_strict(example, response)
        loose = utils.test_instruction_following_loose(example, response)
    except LookupError as exc:  # an NLTK resource: sentence or word tokenisation
        raise IfevalUnavailable(f"NLTK data missing for {', '.join(instruction_ids)}: install it once with "
                                f"`python -m nltk.downloader punkt_tab` ({str(exc).strip().splitlines()[0][:80]})"
                                ) from None
    return IfevalOutcome(list(strict.follow_instruction_list), list(loose.follow_instruction_list))
