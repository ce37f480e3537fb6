"""LLM-judge metrics: `JudgeScore` per turn, `DialogueJudge` per dialogue
(docs/architecture.md, "OpenAI-compatible endpoints").

What the judge reads, as LLaMA-Omni does: the ASR transcript of the user turn (the turn's
text in text-input modes) and the ASR transcript of the reply's speech in speech-output modes,
or the reply's text in text-output modes (S2T, T2T). A speech reply with no audio at all is
judged as the empty answer it was; a reply whose transcript is missing is not judged.

Earlier turns. A turn after the first is judged with the conversation before it (mt-bench's
multi-turn templates need turn 1's question and answer; the other prompts show the earlier
turns as context). The metric finds the previous turn as `item.previous` (a ScoreItem of the
same system and dialogue, turn_index - 1, set by the scoring run so that its transcripts are
there); a run that does not link turns still works, because the metric also remembers every
item it is shown (`precheck` sees every target of a run in turn order before any is scored).
Without the previous turn, a later turn's result is MISSING, never a judgement of a different
prompt.

No judge configured (`context.judge is None`): every result is MISSING with the reason
"no judge configured (--judge-model)". An unparseable reply is FAILED with the raw reply in
details, never 0; with n samples the value is the mean of the parseable ones.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, Optional, Union
from collections.abc import Iterable

from ..judge.client import JudgeClient, JudgeReply, shared_client
from ..judge.prompts import NO_REPLY, Exchange, JudgePrompt, Rendered, get_prompt
from ..types import Mode
from .base import DialogueItem, FieldInfo, Metric, MetricResult, Need, ScoreItem, ScoringContext, Status

NO_JUDGE = "no judge configured (--judge-model)"
DEFAULT_PROMPT = "llama-omni"


@dataclass
class _Job:
    rendered: Rendered
    sources: dict[str, Any]


def _field_infos(prompt: JudgePrompt) -> dict[str, FieldInfo]:
    low, high = prompt.scale
    unit = f"{low:g}-{high:g}"
    described = {
        "score": f"LLM judge score ({prompt.name} prompt, {unit})",
        "content": f"LLM judge content score: helpful, correct, relevant ({unit})",
        "style": f"LLM judge style score: fluent and suited to listening ({unit})",
    }
    if prompt.name == "content-style":
        described["score"] = f"LLM judge: mean of the content and style scores ({unit})"
    return {name: FieldInfo(True, unit, described[name]) for name in prompt.fields}


def _mode(item: ScoreItem) -> Mode:
    return Mode.parse(item.record.mode)


def _question(item: ScoreItem) -> tuple[Optional[str], str]:
    """What the user said, and where it came from (or why it is missing)."""
    if item.user_transcript is not None:
        return item.user_transcript, "user_transcript"
    if not _mode(item).speech_in or not item.record.ok:
        # text input; or a failed turn shown as context, which has no transcript
        return item.record.user_text, "user_text"
    return None, "no ASR transcript of the user turn's speech (user_transcript)"


def _answer(item: ScoreItem) -> tuple[Optional[str], str]:
    """What the assistant said, and where it came from (or why it is missing)."""
    record = item.record
    if not record.ok:
        return NO_REPLY, "no reply (the system's turn failed)"
    if _mode(item).speech_out:
        if item.transcript is not None:
            return item.transcript, "transcript"
        if record.reply_audio is None:
            return "", "no reply audio (silence)"
        return None, "no ASR transcript of the reply's speech (transcript)"
    return record.reply_text or "", "reply_text"


def _exchange(item: ScoreItem) -> Union[Exchange, str]:
    """The turn as the judge reads it, or why it cannot be read."""
    question, qsource = _question(item)
    if question is None:
        return qsource
    answer, asource = _answer(item)
    if answer is None:
        return asource
    return Exchange(question, answer, item.record.reference or None)


class _JudgeMetric(Metric):
    needs = frozenset({Need.JUDGE, Need.USER_TRANSCRIPT, Need.TRANSCRIPT})
    uses_gpu = False
    default_prompt: str = DEFAULT_PROMPT

    def __init__(self, prompt: Optional[str] = None, variant: Optional[str] = None) -> None:
        # `variant`: the registry's `judge:mt-bench` form, same as `judge:prompt=mt-bench`.
        name = prompt or variant or self.default_prompt
        self.prompt = get_prompt(str(name), self.level)
        super().__init__(prompt=self.prompt.name)
        self.fields = _field_infos(self.prompt)  # per instance: content-style adds two fields
        self._client: Optional[JudgeClient] = None

    def load(self, context: ScoringContext) -> None:
        self._client = shared_client(context)

    @property
    def client(self) -> Optional[JudgeClient]:
        return self._client

    def identity(self) -> dict[str, Any]:
        settings = self._client.settings if self._client is not None else None
        return {"metric": self.name, "prompt": self.prompt.name, "prompt_version": self.prompt.version,
                "judge": None if settings is None else settings.identity()}

    # -- shared plumbing -----------------------------------------------------------------

    def _prepare(self, item: Any) -> Union[_Job, MetricResult]:
        raise NotImplementedError

    def _missing(self, reason: str) -> MetricResult:
        return MetricResult.unavailable(self.fields, Status.MISSING, reason)

    def precheck(self, item: Any) -> Optional[MetricResult]:
        if self._client is None:
            return self._missing(NO_JUDGE)
        early = super().precheck(item)
        if early is not None:
            return early
        prepared = self._prepare(item)
        return prepared if isinstance(prepared, MetricResult) else None

    def cache_inputs(self, item: Any) -> Optional[dict[str, Any]]:
        if self._client is None:
            return None
        prepared = self._prepare(item)
        if isinstance(prepared, MetricResult):
            return None
        # The sources (where question and answer came from) are part of the cached details, so
        # they are part of the key: two turns with the same prompt text but different sources
        # (an S2S and a T2S turn) must not read each other's result.
        return {"template": prepared.rendered.template, "messages": prepared.rendered.messages,
                "sources": prepared.sources}

    def score(self, items: list[Any]) -> list[MetricResult]:
        outcomes: list[Union[_Job, MetricResult]] = []
        for item in items:
            early = self.precheck(item)
            outcomes.append(early if early is not None else self._prepare(item))
        jobs = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, _Job)]
        if jobs:
            assert self._client is not None
            replies = self._client.complete_many([job.rendered.messages for _, job in jobs])
            for (i, job), reply in zip(jobs, replies):
                outcomes[i] = self._result(job, reply)
        return [o for o in outcomes if isinstance(o, MetricResult)]

    def _result(self, job: _Job, reply: JudgeReply) -> MetricResult:
        assert self._client is not None
        settings = self._client.settings
        # Only what the (cached) reply determines: a re-score from the cache is identical.
        details: dict[str, Any] = {"prompt": self.prompt.name, "prompt_version": self.prompt.version,
                                   "template": job.rendered.template, "judge_model": settings.model,
                                   "judge_base_url": settings.base_url, **job.sources}
        if not reply.ok:
            details.update(error=reply.error, retries=reply.retries)
            retried = f" (after {reply.retries} retries)" if reply.retries else ""
            return MetricResult.unavailable(self.fields, Status.FAILED,
                                            f"judge request failed: {reply.error}{retried}", details)
        samples = [self.prompt.parse(text) for text in reply.texts]
        good = [s for s in samples if s is not None]
        n_bad = len(samples) - len(good)
        details.update({
            "raw_replies": list(reply.texts),
            "samples": samples,
            "n_samples": len(samples),
            "n_parsed": len(good),
            "parse_status": "ok" if n_bad == 0 else ("failed" if not good else "partial"),
            "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
            "reply_model": reply.model,
            "finish_reasons": list(reply.finish_reasons),
        })
        cut = [s is None and f == "length" for s, f in zip(samples, reply.finish_reasons, strict=False)]
        if any(cut):
            details["cut_at_max_tokens"] = sum(cut)
        if not good:
            return MetricResult({name: None for name in self.fields}, Status.FAILED.value,
                                self._unparseable(len(samples), sum(cut), settings.max_tokens), details)
        values: dict[str, Optional[float]] = {name: fmean(s[name] for s in good) for name in self.fields}
        reason = None
        if n_bad:
            reason = f"{n_bad} of {len(samples)} judge replies unparseable; mean of the other {len(good)}"
            if any(cut):
                reason += f" ({sum(cut)} cut at max_tokens={settings.max_tokens}: raise --judge-max-tokens)"
        return MetricResult(values, Status.OK.value, reason, details)

    def _unparseable(self, n_samples: int, n_cut: int, max_tokens: Optional[int]) -> str:
        """Why no rating came back: a reply cut at max_tokens before its rating says so (the cure
        is a larger --judge-max-tokens, not a better prompt)."""
        if n_cut == n_samples:
            which = "the reply was" if n_samples == 1 else f"all {n_samples} replies were"
            return (f"judge reply cut short: {which} cut at max_tokens={max_tokens} (finish_reason 'length') "
                    f"before the '{self.prompt.reply_format}' rating; raise --judge-max-tokens")
        where = f"any of the {n_samples} replies" if n_samples > 1 else "the reply"
        reason = f"unparseable judge reply: no '{self.prompt.reply_format}' rating in {where}"
        return reason + (f" ({n_cut} cut at max_tokens={max_tokens}: raise --judge-max-tokens)" if n_cut else "")


class JudgeScore(_JudgeMetric):
    """One judgement per turn: `prompt` llama-omni (default), content-style or mt-bench."""

    name = "judge"
    level = "turn"
    description = "LLM judge per turn (llama-omni 1-5, content-style, mt-bench 1-10); needs --judge-model"
    fields = {"score": FieldInfo(True, "", "LLM judge score")}  # per instance, by prompt

    def __init__(self, prompt: Optional[str] = None, variant: Optional[str] = None) -> None:
        super().__init__(prompt, variant)
        self._seen: dict[tuple[str, str, int], ScoreItem] = {}

    def _remember(self, item: ScoreItem) -> None:
        record = item.record
        self._seen[(record.system, record.dialogue_id, record.turn_index)] = item

    def precheck(self, item: ScoreItem) -> Optional[MetricResult]:
        self._remember(item)
        return super().precheck(item)

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        for item in items:
            self._remember(item)
        return super().score(items)

    def previous(self, item: ScoreItem) -> Optional[ScoreItem]:
        """The turn before `item` in its dialogue: `item.previous`, else one this metric was shown."""
        record = item.record
        if record.turn_index <= 0:
            return None
        candidate = getattr(item, "previous", None)
        if candidate is None:
            candidate = self._seen.get((record.system, record.dialogue_id, record.turn_index - 1))
        if candidate is None:
            return None
        prev = candidate.record
        if (prev.system, prev.dialogue_id, prev.turn_index) != (record.system, record.dialogue_id,
                                                                record.turn_index - 1):
            return None
        return candidate

    def _history(self, item: ScoreItem) -> Union[list[Exchange], str]:
        wanted = self.prompt.history_turns
        history: list[Exchange] = []
        current = item
        while current.record.turn_index > 0 and (wanted is None or len(history) < wanted):
            prev = self.previous(current)
            if prev is None:
                return (f"turn {current.record.turn_index - 1} of this dialogue was not given to the judge "
                        f"(the {self.prompt.name} prompt shows the earlier turns; the scoring run links "
                        "them as ScoreItem.previous)")
            exchange = _exchange(prev)
            if isinstance(exchange, str):
                return f"earlier turn {prev.record.turn_index}: {exchange}"
            history.append(exchange)
            current = prev
        history.reverse()
        return history

    def _prepare(self, item: ScoreItem) -> Union[_Job, MetricResult]:
        exchange = _exchange(item)
        if isinstance(exchange, str):
            return self._missing(exchange)
        history = self._history(item)
        if isinstance(history, str):
            return self._missing(history)
        rendered = self.prompt.render(exchange, history, item.record.category)
        sources = {"question_from": _question(item)[1], "answer_from": _answer(item)[1],
                   "history_turns": len(history)}
        return _Job(rendered, sources)


class DialogueJudge(_JudgeMetric):
    """One 1-5 judgement of a whole dialogue: coherence, memory, helpfulness, speech."""

    name = "judge_dialogue"
    level = "dialogue"
    default_prompt = "dialogue"
    description = "LLM judge, one 1-5 score for a whole multi-turn dialogue; needs --judge-model"
    fields = {"score": FieldInfo(True, "1-5", "LLM judge score of the whole dialogue")}

    def _prepare(self, item: DialogueItem) -> Union[_Job, MetricResult]:
        exchanges = []
        for turn in item.turns:
            exchange = _exchange(turn)
            if isinstance(exchange, str):
                return self._missing(f"turn {turn.record.turn_index}: {exchange}")
            exchanges.append(exchange)
        rendered = self.prompt.render_dialogue(exchanges)
        sources = {"turns": [t.record.turn_index for t in item.turns],
                   "answer_from": sorted({_answer(t)[1] for t in item.turns})}
        return _Job(rendered, sources)


# -- what the judge did in a scoring run ------------------------------------------------------

@dataclass
class JudgeSummary:
    """How the judgements of one scoring run went, for the terminal: failures grouped by
    reason (a request that failed, a reply without a rating). Missing results (no judge, no
    transcript) never reached the judge and are not counted."""

    judged: int = 0  # results that reached the judge: scored, or failed
    scored: int = 0
    request_failures: Counter[str] = field(default_factory=Counter)  # reason → results
    other_failures: Counter[str] = field(default_factory=Counter)  # unparseable, cut short, crashed

    @property
    def all_requests_failed(self) -> bool:
        """Every judgement that was sent failed as a request (401, 404, unreachable…)."""
        return self.judged > 0 and sum(self.request_failures.values()) == self.judged

    def lines(self) -> list[str]:
        failed = sum(self.request_failures.values())
        head = f"judge: {self.judged} judgements, {self.scored} scored"
        if failed:
            head += f", {failed} failed requests"
        if self.other_failures:
            head += f", {sum(self.other_failures.values())} without a rating"
        groups = self.request_failures.most_common() + self.other_failures.most_common()
        return [head] + [f"  {count} × {reason}" for reason, count in groups]


def summarize_judgements(rows: Iterable[Any], metrics: dict[str, Any]) -> Optional[JudgeSummary]:
    """The summary of the judge metrics' rows (`ScoreRow`s of a scoring run); None where the
    run has no judge metric."""
    labels = {label for label, metric in metrics.items() if isinstance(metric, _JudgeMetric)}
    if not labels:
        return None
    summary = JudgeSummary()
    for row in rows:
        if row.metric not in labels or row.result.status not in (Status.OK.value, Status.FAILED.value):
            continue
        summary.judged += 1
        details = row.result.details or {}
        if row.result.status == Status.OK.value:
            summary.scored += 1
        elif details.get("error"):
            summary.request_failures[str(details["error"])] += 1
        else:
            summary.other_failures[str(row.result.reason)] += 1
    return summary
