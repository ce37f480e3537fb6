"""The suites' rule-based scorers, applied as their authors' code applies them. The rules' text
(answer templates, refusal phrases, BBH answer rules) is not ivbench's: it is read from the user's
checkout of VoiceBench at scoring time (authors.py) and handed in as a `VoiceBenchText`.

- `extract_choice`: VoiceBench's multiple-choice answer extraction (src/evaluator/mcq.py);
- `extract_bbh`: VoiceBench's BBH answer extraction per subtask (src/evaluator/bbh.py);
- `is_refusal`: VoiceBench's advbench refusal rule (src/evaluator/harm.py);
- `ifeval_check`: the IFEval instruction checks, strict and loose, through lm-eval's maintained
  implementation (VoiceBench vendors Google's code for it in src/evaluator/ifeval.py); it needs
  no text of VoiceBench's.

Where the authors' code falls back to a random guess, these return None: the caller counts the
answer as unextractable, never as a guess.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional, cast

from ..errors import MissingDependency
from .authors import CHOICE_MARK, VoiceBenchText
from .pysource import Rule

CHOICES = ("a", "b", "c", "d")
# Model-specific turn markers VoiceBench strips before scoring (mcq.py, bbh.py, ifeval.py).
_TURN_PREFIXES = ("<1>", "<2>", "<3>")
_USER_SUFFIX = "<|user|>"
# bbh.py's normalisation: these become spaces, then whitespace is collapsed.
_BBH_SPACED = (":", "**", '"', "-", ",", ".", "：")
# A bare letter, or one followed by one of these, is an answer (mcq.py's rule after the templates).
_LETTER_ENDS = (".", ",", ":", ")")
BBH_SUBTASKS = ("sports_understanding", "hyperbaton", "navigate", "web_of_lies")
BBH_GOLD = {"yes": 1, "no": 0, "(a)": 0, "(b)": 1}  # how bbh.py maps a reference to 0/1
# Which of bbh.py's extract_answer_<name> methods reads each subtask.
_BBH_METHOD = {"sports_understanding": "sports", "hyperbaton": "hyperbaton", "navigate": "navigate",
               "web_of_lies": "lies"}


def strip_turn_marker(text: str) -> str:
    """VoiceBench drops a leading "<1>"/"<2>"/"<3>" and a trailing "<|user|>" (Freeze-Omni's and
    GLM's markers) before reading a reply."""
    if text.startswith(_TURN_PREFIXES):
        text = text[3:].strip()
    if text.endswith(_USER_SUFFIX):
        text = text[: -len(_USER_SUFFIX)].strip()
    return text


def extract_choice(reply: str, text: VoiceBenchText) -> Optional[str]:
    """The option letter (A-D) VoiceBench's MCQ evaluator reads from a reply, or None."""
    reply = reply.lower()
    if reply.startswith(_TURN_PREFIXES):
        reply = reply[3:].strip()
    for template in text.mcq_templates:
        for choice in CHOICES:
            if template.replace(CHOICE_MARK, choice) in reply:
                return choice.upper()
    for choice in CHOICES:
        if reply == choice or any(reply.startswith(choice + end) for end in _LETTER_ENDS):
            return choice.upper()
    found = _apply(text.mcq_fallbacks, reply)
    return None if found is None else str(found)


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


def _matches(rule: Rule, text: str) -> bool:
    if rule.kind == "contains":
        return rule.pattern in text
    if rule.kind == "equals":
        return text == rule.pattern
    if rule.kind == "startswith":
        return text.startswith(rule.pattern)
    if rule.kind == "endswith":
        return text.endswith(rule.pattern)
    return re.search(rule.pattern, text) is not None  # "regex": pysource makes no other kind


def _apply(rules: tuple[Rule, ...], text: str) -> Optional[object]:
    """The answer of the first rule that matches, as an if/elif chain gives it."""
    return next((rule.answer for rule in rules if _matches(rule, text)), None)


def extract_bbh(reply: str, subtask: str, text: VoiceBenchText) -> Optional[int]:
    """VoiceBench's BBH answer (0/1: no/yes, or option (a)/(b)) for a subtask, or None."""
    normalised = normalise_bbh(reply)
    method = text.bbh[_BBH_METHOD[subtask]]
    if method.yes_no_first:
        found = _apply(text.bbh["yn"].rules, normalised)
        if found is not None:
            return cast(int, found)  # pysource/authors checked every answer is 0 or 1
    found = _apply(method.rules, normalised)
    return None if found is None else cast(int, found)


def is_refusal(reply: str, text: VoiceBenchText) -> bool:
    """VoiceBench's advbench rule: an empty reply, or one containing any refusal phrase (case-blind)."""
    if not reply.strip():
        return True
    lowered = reply.lower()
    return any(phrase.lower() in lowered for phrase in text.refusals)


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
