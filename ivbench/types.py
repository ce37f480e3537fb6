"""The data model shared by every phase: dialogues in, reply events out, records on disk."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional, Union

from .errors import ConfigError

if TYPE_CHECKING:  # numpy is imported by whoever makes audio; `ivbench list` needs none
    import numpy as np


class Mode(str, Enum):
    """Input→output modality of a turn (the four cross-modal tasks of IntrinsicVoice)."""

    S2S = "s2s"
    S2T = "s2t"
    T2S = "t2s"
    T2T = "t2t"

    @property
    def speech_in(self) -> bool:
        return self.value[0] == "s"

    @property
    def speech_out(self) -> bool:
        return self.value[-1] == "s"

    @classmethod
    def parse(cls, value: Union[str, Mode]) -> Mode:
        try:
            return cls(str(value.value if isinstance(value, Mode) else value).lower())
        except ValueError:
            raise ConfigError(
                f"unknown mode {value!r}: use one of {', '.join(m.value for m in cls)}"
            ) from None


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] and their sample rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass
class UserTurn:
    """One user turn as a task file states it."""

    text: str
    audio_path: Optional[str] = None  # recorded audio, resolved against the task folder
    reference: Optional[str] = None  # reference answer, where one exists


@dataclass
class Dialogue:
    id: str
    turns: list[UserTurn]
    category: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """What the dialogue asks, as 16 hex digits: its turns' text, audio file names and
        references. A resumed run compares it with the digest recorded when the dialogue was first
        run, so an edited task file cannot mix two versions of a dialogue in one run."""
        import hashlib
        import json

        turns = [[t.text, t.audio_path, t.reference] for t in self.turns]
        return hashlib.sha256(json.dumps(turns, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


# What a task's turn references are, as its header declares (`references:`). A reference
# *answer* to a free-form question shares few words with a good reply, so a WER against it
# measures wording, not quality; the words a system is expected to *say* (read-aloud, T2S)
# make that WER a quality number. The report shows ref-WER as a headline only for those.
REFERENCES_ANSWERS = "answers"
REFERENCES_EXPECTED_WORDS = "expected-words"
REFERENCE_KINDS = (REFERENCES_ANSWERS, REFERENCES_EXPECTED_WORDS)


@dataclass
class Task:
    """A named set of dialogues plus how to judge them."""

    name: str
    dialogues: list[Dialogue]
    description: str = ""
    source: str = ""
    licence: str = ""
    judge_prompt: Optional[str] = None
    path: Optional[str] = None  # the task file, when it came from one
    options: dict[str, Any] = field(default_factory=dict)
    references: str = REFERENCES_ANSWERS  # one of REFERENCE_KINDS


@dataclass
class TurnInput:
    """What the runner hands to `Session.respond`.

    `audio` is set in speech-input modes, `text` always: it is the turn's script, which
    text-input systems answer and which calibration baselines (parrot) and oracle cascades
    may read; a speech-input system under test should listen to `audio` instead.
    """

    mode: Mode
    text: str
    audio: Optional[Audio] = None
    dialogue_id: str = ""
    turn_index: int = 0


@dataclass
class AudioChunk:
    """A reply event: speech samples (mono float32 on the CPU) at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int


@dataclass
class TextDelta:
    """A reply event: a piece of the reply's text."""

    text: str


@dataclass
class StageMark:
    """A reply event: a system-internal milestone (e.g. "asr_done", "llm_first_token").

    The runner stamps it with its clock, so cascades can report a stage breakdown. `data`
    (JSON values) is what the system knew at that point — a cascade's ASR transcript of the
    user turn — and is kept in the record's `stage_data` under the stage's name.
    """

    name: str
    data: Optional[dict[str, Any]] = None


ReplyEvent = Union[AudioChunk, TextDelta, StageMark]


class TurnStatus(str, Enum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"


@dataclass
class TurnRecord:
    """One completed (or failed) turn, as written to records.jsonl."""

    system: str
    task: str
    dialogue_id: str
    turn_index: int
    n_turns: int
    mode: str
    attempt: int
    status: str
    user_text: str
    user_audio: Optional[str]  # path relative to the run directory
    reference: Optional[str]
    reply_text: Optional[str]
    reply_audio: Optional[str]  # path relative to the run directory
    reply_sample_rate: Optional[int]
    reply_duration_s: Optional[float]
    # Latencies in milliseconds from t0 (the complete user turn handed to respond()).
    first_audio_ms: Optional[float]
    first_text_ms: Optional[float]
    end_ms: Optional[float]
    rtf: Optional[float]
    events: list[list[Any]]  # [kind, ms since t0, size]: size = samples or characters
    stages: dict[str, float]  # stage name -> ms since t0
    error: Optional[dict[str, str]] = None
    category: Optional[str] = None
    stage_data: dict[str, Any] = field(default_factory=dict)  # stage name -> StageMark.data
    # What the runner changed or noticed without failing the turn (audio outside [-1, 1] clipped,
    # a session that failed to close after an already failed turn).
    warnings: list[str] = field(default_factory=list)
    # The dialogue's metadata (JSON values): what a scorer needs besides the reply (a suite's
    # correct option, ifeval's instruction ids), so a run directory can be scored without the task.
    metadata: dict[str, Any] = field(default_factory=dict)
    # Which worker ran the turn ("w1", "w2"…: the manifest's sessions[].workers say what each
    # one ran on; "in-process" with --in-process). None in runs made before workers existed.
    worker: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def ok(self) -> bool:
        return self.status == TurnStatus.OK.value


# -- scoring -------------------------------------------------------------------------------

class Status(str, Enum):
    """A metric result's status: only `ok` carries values; the others say why there are none."""

    OK = "ok"
    MISSING = "missing"  # could not be computed (no judge configured, system turn failed…)
    NOT_APPLICABLE = "not_applicable"  # the question does not arise (no text output for asr_wer)
    FAILED = "failed"  # the metric itself failed (unparseable judge reply, model error)


@dataclass(frozen=True)
class FieldInfo:
    """What a metric field means: which way is better (None: neither), its unit, a description."""

    higher_is_better: Optional[bool]
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class MetricInfo:
    """What a metric says of itself to the tables and the report: its registry name and its
    fields. A `Metric` has both; a run's summary.csv records them, so a report needs no metric
    objects (nor the metric's package) to know which way is better."""

    name: str
    fields: dict[str, FieldInfo]


@dataclass
class MetricResult:
    """A metric's result for one turn or dialogue; a value that cannot be computed is None with
    a status other than ok and a reason, never 0."""

    values: dict[str, Optional[float]]
    status: str = Status.OK.value
    reason: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)  # alignments, raw judge replies…

    @classmethod
    def unavailable(cls, fields: Any, status: Status, reason: str,
                    details: Optional[dict[str, Any]] = None) -> MetricResult:
        return cls({name: None for name in fields}, status.value, reason, details or {})

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, "status": self.status, "reason": self.reason,
                "details": self.details}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricResult:
        return cls(data["values"], data["status"], data.get("reason"), data.get("details") or {})
