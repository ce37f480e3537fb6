"""The metric interface and its definitions, in the manner of VERSA's metric registry.

Each metric class declares, without importing anything heavy:

- `needs`: what it reads (`Need` values): reply audio, reply text, reference, the ASR
  transcript of the reply (and of the user turn), a judge;
- `uses_gpu`: whether it wants a GPU when one is given;
- `level`: "turn" (one result per record) or "dialogue" (one per dialogue);
- `fields`: the numbers it reports, each with its direction and unit;
- its options: the keyword arguments of its constructor (a metric without a constructor of
  its own takes none, and refuses any), each described in `option_help`; `metric_options()`
  lists them for `ivbench list metrics`.

A metric scores a batch of items and returns one `MetricResult` per item. A value that
cannot be computed is None with a reason (`status` "missing", "not_applicable" or
"failed"), never 0. Results are cached by `Metric.cache_inputs(item)` and `identity()`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Optional

from ..cache import sha256_file
from ..errors import PluginError
from ..scoring.context import ScoringContext  # what `load` is given (defined by the scoring phase)
from ..types import Audio, FieldInfo, MetricResult, Status, TurnRecord


class Need(str, Enum):
    REPLY_AUDIO = "reply_audio"
    REPLY_TEXT = "reply_text"
    REFERENCE = "reference"
    TRANSCRIPT = "transcript"  # ASR of the reply's speech
    USER_TRANSCRIPT = "user_transcript"  # ASR of the user turn's speech
    JUDGE = "judge"


@dataclass(frozen=True)
class Ratio:
    """Over a category's items: sum of `numerator` / sum of `denominator`, times `scale`; without
    a denominator, the mean of the numerator's values (missing values left out)."""

    numerator: str
    denominator: Optional[str] = None
    scale: float = 1.0


@dataclass(frozen=True)
class Headline:
    """A suite's own summary figure (its leaderboard number), from a metric's per-item values
    and each item's dialogue category (docs/architecture.md, "Suites"): a category's figure is
    the mean of its `parts` ratios (`default` for a category not named); `name` is the mean of
    the categories' figures, each times `to_overall` (1 when not named). It is missing unless
    every category in `require` is in the run. The table reports each category's figure and
    `name`, with 95% CIs from a bootstrap over dialogues within each category."""

    name: str
    default: tuple[Ratio, ...]
    parts: dict[str, tuple[Ratio, ...]] = field(default_factory=dict)
    to_overall: dict[str, float] = field(default_factory=dict)
    require: tuple[str, ...] = ()
    only: tuple[str, ...] = ()  # the categories it averages (`require` if given, else all present)
    description: str = ""

    def ratios(self, category: str) -> tuple[Ratio, ...]:
        return self.parts.get(category, self.default)


@dataclass
class ScoreItem:
    """One turn to score: its record, lazily loaded audio, and transcripts once ASR ran."""

    record: TurnRecord
    run_dir: Path
    transcript: Optional[str] = None
    user_transcript: Optional[str] = None
    previous: Optional[ScoreItem] = field(default=None, repr=False, compare=False)  # the turn before
    _audio_cache: dict[str, Audio] = field(default_factory=dict, repr=False)

    def _audio(self, rel: Optional[str]) -> Optional[Audio]:
        if rel is None:
            return None
        if rel not in self._audio_cache:
            from ..audio import read_audio

            self._audio_cache[rel] = read_audio(self.run_dir / rel, shown=f"{rel} (in the run directory)")
        return self._audio_cache[rel]

    def reply_audio(self) -> Optional[Audio]:
        return self._audio(self.record.reply_audio)

    def user_audio(self) -> Optional[Audio]:
        return self._audio(self.record.user_audio)

    def reply_audio_sha256(self) -> Optional[str]:
        rel = self.record.reply_audio
        return None if rel is None else sha256_file(self.run_dir / rel)

    def user_audio_sha256(self) -> Optional[str]:
        rel = self.record.user_audio
        return None if rel is None else sha256_file(self.run_dir / rel)

    @property
    def key(self) -> tuple[str, str, Optional[int]]:
        return (self.record.system, self.record.dialogue_id, self.record.turn_index)


@dataclass
class DialogueItem:
    """A whole dialogue of one system, for dialogue-level metrics (turns in order)."""

    turns: list[ScoreItem]

    @property
    def key(self) -> tuple[str, str, Optional[int]]:
        first = self.turns[0].record
        return (first.system, first.dialogue_id, None)


class Metric(ABC):
    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[Need]] = frozenset()
    uses_gpu: ClassVar[bool] = False
    level: ClassVar[str] = "turn"
    # Declared on the class; a metric whose fields depend on its options (the judge's prompt)
    # sets its own on the instance, so this is not a ClassVar.
    fields: dict[str, FieldInfo] = {}
    description: ClassVar[str] = ""
    headlines: ClassVar[tuple[Headline, ...]] = ()  # a suite's own summary figures (scoring/headlines.py)
    option_help: ClassVar[dict[str, str]] = {}  # option -> what it does

    def __init__(self, **options: Any) -> None:
        # A metric that declares no constructor has no options: one given to it would be
        # ignored without a word, so it is refused (subclasses pass their bound options here).
        if options and type(self).__init__ is Metric.__init__:
            raise PluginError(f"metric {self.name!r} takes no options (got {', '.join(sorted(options))}); "
                              "`ivbench list metrics` shows each metric's options")
        self.options = options

    def load(self, context: ScoringContext) -> None:
        """Load models once (heavy imports go here)."""

    def identity(self) -> dict[str, Any]:
        """The model and parameters that determine results (part of every cache key)."""
        return {"metric": self.name, "options": self.options}

    @abstractmethod
    def cache_inputs(self, item: Any) -> Optional[dict[str, Any]]:
        """The exact inputs of this item's result, for the cache key; None: do not cache."""

    @abstractmethod
    def score(self, items: list[Any]) -> list[MetricResult]:
        """One result per item, in order. Items are ScoreItem (turn) or DialogueItem (dialogue)
        that passed `precheck` (call `evaluate` to have them checked)."""

    def evaluate(self, items: list[Any]) -> list[MetricResult]:
        """`precheck` each item, then `score` the rest in one batch: what a direct caller wants
        (the scoring phase does the same with its cache in between)."""
        early = [self.precheck(item) for item in items]
        pending = [item for item, result in zip(items, early) if result is None]
        scored = iter(self.score(pending) if pending else [])
        return [result if result is not None else next(scored) for result in early]

    def precheck(self, item: Any) -> Optional[MetricResult]:
        """A result without computing, when the item lacks what this metric needs."""
        if isinstance(item, DialogueItem):
            if all(not t.record.ok for t in item.turns):
                return MetricResult.unavailable(self.fields, Status.MISSING, "every turn of the dialogue failed")
            return None
        record = item.record
        if not record.ok:
            return MetricResult.unavailable(self.fields, Status.MISSING,
                                            f"the system's turn {record.status}: "
                                            f"{(record.error or {}).get('message', '')[:200]}")
        if Need.REPLY_AUDIO in self.needs and record.reply_audio is None:
            return MetricResult.unavailable(self.fields, Status.NOT_APPLICABLE,
                                            f"no reply audio (mode {record.mode})")
        if Need.REPLY_TEXT in self.needs and not record.reply_text:
            return MetricResult.unavailable(self.fields, Status.NOT_APPLICABLE,
                                            f"no reply text (mode {record.mode})")
        if Need.REFERENCE in self.needs and not record.reference:
            return MetricResult.unavailable(self.fields, Status.NOT_APPLICABLE,
                                            "the task gives no reference answer for this turn")
        return None


def metric_options(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, what it does) of each option a metric class takes, in signature order;
    a default of `inspect.Parameter.empty` means the option is required."""
    from ..registry import factory_options

    if next((k for k in cls.__mro__ if "__init__" in vars(k)), None) is Metric:
        return []  # Metric's own **options, which it refuses
    return factory_options(cls)
