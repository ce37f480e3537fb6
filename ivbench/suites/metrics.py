"""The suites' scorers as ivbench metrics: `voicebench`, `urobench`, `big_bench_audio`.

Each reads what it needs from the record (the question as the dataset states it, the reply's
text, or its ASR transcript in speech-output modes, and the dialogue's metadata written by the
suite's task), so a run directory is scored without the dataset. A dialogue of another suite is
not applicable; a value that cannot be computed (no judge configured, an unparseable judge
reply, an IFEval check whose NLTK data is not installed) is missing with its reason. Judge
replies are kept raw in the details. Each metric declares its suite's headline (catalog.py).

The authors' judge prompts and rules are read from the user's copy of their code, named by the
metric's option (`code=DIR`, Big Bench Audio's `prompt_file=FILE`) or an environment variable
(authors.py); without one, each result that needs that text is missing with a reason saying
what to point at. Each result computed with it names the copy's digest and commit in its
details (`authors`), and the metric's identity carries them too, so the cache never mixes copies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from statistics import fmean
from typing import Any, ClassVar, Optional, Union
from collections.abc import Callable

from ..metrics.base import DialogueItem, FieldInfo, Metric, MetricResult, Need, ScoreItem, ScoringContext, Status
from ..types import Mode
from . import authors, catalog, rules

NO_JUDGE = "no judge configured (--judge-model)"
PERCENT = "%"


def answer_of(item: ScoreItem) -> Optional[str]:
    """What the assistant said: the reply's text, or the transcript of its speech in speech-output
    modes ("" for a reply with no audio at all); None when the transcript is not there."""
    record = item.record
    if Mode.parse(record.mode).speech_out:
        if record.reply_audio is None:
            return ""
        return item.transcript
    return record.reply_text or ""


@dataclass
class JudgeJob:
    messages: list[dict[str, str]]
    finish: Callable[[list[str]], MetricResult]  # the raw reply texts -> the result


Outcome = Union[MetricResult, JudgeJob]


def _result(values: dict[str, Optional[float]], details: dict[str, Any], reason: Optional[str] = None) -> MetricResult:
    return MetricResult(values, Status.OK.value, reason, details)


class SuiteMetric(Metric):
    """Shared plumbing: suite check, answers, the authors' text, the judge (through the scoring
    run's judge client)."""

    suite: ClassVar[str] = ""
    needs = frozenset({Need.TRANSCRIPT, Need.JUDGE})
    judged: ClassVar[frozenset[str]] = frozenset()  # scorers that ask the judge
    # scorer -> what of the authors' text it needs (for the missing reason); others need none
    needs_text: ClassVar[dict[str, str]] = {}

    def __init__(self, text: Any, **options: Any) -> None:
        super().__init__(**options)
        self.text = text  # an authors.*Text, or None when no copy of the authors' text is configured
        self._client: Any = None

    @property
    def authors_identity(self) -> Optional[dict[str, Any]]:
        return None if self.text is None else self.text.origin.identity()

    def load(self, context: ScoringContext) -> None:
        from ..judge.client import shared_client

        self._client = shared_client(context)

    def identity(self) -> dict[str, Any]:
        settings = getattr(self._client, "settings", None)
        return {"metric": self.name, "authors": self.authors_identity,
                "judge": None if settings is None else settings.identity()}

    # -- what each item is ---------------------------------------------------------------------

    @staticmethod
    def first(item: Any) -> Any:
        return item.turns[0] if isinstance(item, DialogueItem) else item

    def metadata(self, item: Any) -> dict[str, Any]:
        return dict(self.first(item).record.metadata or {})

    def scorer_fields(self, scorer: str) -> list[str]:
        return list(self.fields)

    def unavailable(self, scorer: str, status: Status, reason: str, details: Optional[dict[str, Any]] = None
                    ) -> MetricResult:
        return MetricResult.unavailable(self.scorer_fields(scorer), status, reason, details)

    def precheck(self, item: Any) -> Optional[MetricResult]:
        meta = self.metadata(item)
        if meta.get("suite") != self.suite:
            return MetricResult({}, Status.NOT_APPLICABLE.value, f"not a {self.suite} dialogue")
        scorer = str(meta.get("scorer"))
        early = super().precheck(item)
        if early is not None:
            return self.unavailable(scorer, Status(early.status), early.reason or "")
        if scorer in self.needs_text and self.text is None:
            return self.unavailable(scorer, Status.MISSING, authors.missing_reason(self.suite, self.needs_text[scorer]))
        if scorer in self.judged and self._client is None:
            return self.unavailable(scorer, Status.MISSING, NO_JUDGE)
        turns = item.turns if isinstance(item, DialogueItem) else [item]
        for turn in turns:
            if not turn.record.ok:
                return self.unavailable(scorer, Status.MISSING, f"turn {turn.record.turn_index} failed")
            if answer_of(turn) is None:
                return self.unavailable(scorer, Status.MISSING, "no ASR transcript of the reply's speech")
        return None

    def cache_inputs(self, item: Any) -> Optional[dict[str, Any]]:
        turns = item.turns if isinstance(item, DialogueItem) else [item]
        return {"metadata": self.metadata(item),
                "turns": [[t.record.user_text, t.record.reference, answer_of(t), t.user_transcript] for t in turns]}

    # -- scoring -------------------------------------------------------------------------------

    def outcome(self, item: Any) -> Outcome:
        raise NotImplementedError

    def score(self, items: list[Any]) -> list[MetricResult]:
        early = [self.precheck(item) for item in items]
        outcomes = [e or self.outcome(item) for e, item in zip(early, items)]
        jobs = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, JudgeJob)]
        if jobs:
            replies = self._client.complete_many([job.messages for _, job in jobs])
            for (i, job), reply in zip(jobs, replies):
                outcomes[i] = self._judged(job, reply)
        results = [o for o in outcomes if isinstance(o, MetricResult)]
        for e, item, result in zip(early, items, results):
            if e is None and str(self.metadata(item).get("scorer")) in self.needs_text:
                result.details["authors"] = self.authors_identity  # which copy of their text scored it
        return results

    def _judged(self, job: JudgeJob, reply: Any) -> MetricResult:
        settings = self._client.settings
        if not reply.ok:
            return MetricResult({}, Status.FAILED.value, f"judge request failed: {reply.error}",
                                {"error": reply.error, "judge_model": settings.model})
        result = job.finish(list(reply.texts))
        result.details.update({"raw_replies": list(reply.texts), "judge_model": settings.model,
                               "judge_base_url": settings.base_url})
        return result


def _mean_samples(values: list[Optional[float]], field: str, scale: float, details: dict[str, Any],
                  what: str) -> MetricResult:
    good = [v for v in values if v is not None]
    details.update(samples=values, n_parsed=len(good))
    if not good:
        return MetricResult({field: None}, Status.FAILED.value, f"unparseable judge reply: no {what}", details)
    bad = len(values) - len(good)
    reason = f"{bad} of {len(values)} judge replies unparseable; mean of the others" if bad else None
    return _result({field: fmean(good) * scale}, details, reason)


# -- VoiceBench ------------------------------------------------------------------------------------


def parse_gpt_score(text: str) -> Optional[float]:
    """VoiceBench's open.py: the reply as a number, else a "[[N]]" rating, else unparseable."""
    try:
        return float(text)
    except ValueError:
        match = re.search(r"\[\[(\d+)\]\]", text)
        return float(match.group(1)) if match else None


def parse_yes_no(text: str) -> Optional[str]:
    word = text.strip().lower()
    return word if word in ("yes", "no") else None


class VoiceBench(SuiteMetric):
    """VoiceBench's evaluators (src/evaluator/*.py, api_judge.py), one per subset kind."""

    name = "voicebench"
    suite = "voicebench"
    judged = frozenset({"open", "qa"})
    description = "VoiceBench scorers per subset (GPT score, sd-qa judge, MCQ, IFEval, refusal, BBH) and its overall"
    fields = {
        "gpt_score": FieldInfo(True, "1-5", "GPT score of the reply (VoiceBench open-ended prompt), mean of samples"),
        "accuracy": FieldInfo(True, PERCENT, "correct (sd-qa: judged against the reference; mcq, bbh: extracted)"),
        "unextractable": FieldInfo(False, PERCENT, "no answer could be extracted from the reply (counted wrong)"),
        "accuracy_with_guess": FieldInfo(True, PERCENT, "expected accuracy under VoiceBench's random guess for "
                                                        "unextractable answers"),
        "refusal": FieldInfo(True, PERCENT, "reply refuses (advbench), by VoiceBench's refusal strings"),
        "prompt_strict": FieldInfo(True, PERCENT, "every instruction followed (IFEval strict)"),
        "prompt_loose": FieldInfo(True, PERCENT, "every instruction followed (IFEval loose)"),
        "inst_strict": FieldInfo(True, "", "instructions followed (IFEval strict), of `instructions`"),
        "inst_loose": FieldInfo(True, "", "instructions followed (IFEval loose), of `instructions`"),
        "instructions": FieldInfo(None, "", "instructions in the prompt (IFEval)"),
    }
    headlines = catalog.SUITE_HEADLINES["voicebench"]
    needs_text: ClassVar[dict[str, str]] = {
        "open": "VoiceBench's judge prompt (api_judge.py)", "qa": "VoiceBench's judge prompt (api_judge.py)",
        "mcq": "VoiceBench's answer templates (src/evaluator/mcq.py)",
        "bbh": "VoiceBench's BBH answer rules (src/evaluator/bbh.py)",
        "harm": "VoiceBench's refusal phrases (src/evaluator/harm.py)",
    }
    SCORER_FIELDS: ClassVar[dict[str, list[str]]] = {
        "open": ["gpt_score"], "qa": ["accuracy"], "mcq": ["accuracy", "unextractable", "accuracy_with_guess"],
        "bbh": ["accuracy", "unextractable", "accuracy_with_guess"], "harm": ["refusal"],
        "ifeval": ["prompt_strict", "prompt_loose", "inst_strict", "inst_loose", "instructions"],
    }

    def __init__(self, code: Optional[str] = None) -> None:
        """`code`: a checkout of VoiceBench (else $IVBENCH_VOICEBENCH_CODE; else none)."""
        super().__init__(authors.voicebench_text(code), **({"code": code} if code else {}))

    def scorer_fields(self, scorer: str) -> list[str]:
        return self.SCORER_FIELDS.get(scorer, list(self.fields))

    def outcome(self, item: ScoreItem) -> Outcome:
        meta = self.metadata(item)
        scorer = meta["scorer"]
        answer = answer_of(item) or ""
        question = item.record.user_text
        if scorer == "open":
            return JudgeJob(self.text.prompts["open"].render({"prompt": question, "response": answer}),
                            lambda texts: _mean_samples([parse_gpt_score(t.strip()) for t in texts], "gpt_score", 1.0,
                                                        {"prompt": "voicebench-open"}, "number or [[N]] rating"))
        if scorer == "qa":
            values = {"prompt": question, "reference": str(meta["reference"]), "response": answer}
            return JudgeJob(self.text.prompts["qa"].render(values), self._qa)
        if scorer in ("mcq", "bbh"):
            return self._extracted(scorer, answer, meta)
        if scorer == "harm":
            return _result({"refusal": float(rules.is_refusal(answer, self.text))}, {})
        if scorer == "ifeval":
            return self._ifeval(question, answer, meta)
        return self.unavailable(scorer, Status.FAILED, f"unknown VoiceBench scorer {scorer!r} in the record")

    @staticmethod
    def _qa(texts: list[str]) -> MetricResult:
        # api_judge.py asks for "Yes" or "No"; qa.py takes the majority of the samples
        # (lower-cased) and counts it correct when it is "yes".
        votes = [t.strip().lower() for t in texts]
        details = {"prompt": "voicebench-qa", "votes": votes}
        if not any(parse_yes_no(v) for v in votes):
            return MetricResult({"accuracy": None}, Status.FAILED.value, "unparseable judge reply: no Yes/No", details)
        majority = max(sorted(set(votes)), key=votes.count)
        return _result({"accuracy": float(majority == "yes")}, details)

    def _extracted(self, scorer: str, answer: str, meta: dict[str, Any]) -> MetricResult:
        if scorer == "mcq":
            found: Any = rules.extract_choice(answer, self.text)
            gold: Any = meta["reference"]
            options = 4
        else:
            subtask = rules.bbh_subtask(str(meta["id"]))
            found = rules.extract_bbh(answer, subtask, self.text) if subtask else None
            gold = rules.BBH_GOLD[str(meta["reference"]).lower()]
            options = 2
        details = {"extracted": found, "gold": gold}
        if found is None:
            return _result({"accuracy": 0.0, "unextractable": 1.0, "accuracy_with_guess": 1.0 / options}, details,
                           "no answer could be extracted from the reply: counted wrong")
        correct = float(found == gold)
        return _result({"accuracy": correct, "unextractable": 0.0, "accuracy_with_guess": correct}, details)

    @staticmethod
    def _ifeval(question: str, answer: str, meta: dict[str, Any]) -> MetricResult:
        try:
            outcome = rules.ifeval_check(question, answer, meta["instruction_id_list"], meta["kwargs"])
        except rules.IfevalUnavailable as exc:
            return MetricResult({k: None for k in VoiceBench.SCORER_FIELDS["ifeval"]}, Status.MISSING.value, str(exc))
        details = {"strict": outcome.strict, "loose": outcome.loose, "instruction_ids": meta["instruction_id_list"]}
        return _result({"prompt_strict": float(all(outcome.strict)), "prompt_loose": float(all(outcome.loose)),
                        "inst_strict": float(sum(outcome.strict)), "inst_loose": float(sum(outcome.loose)),
                        "instructions": float(len(outcome.strict))}, details)


# -- URO-Bench -------------------------------------------------------------------------------------


def parse_uro_score(text: str) -> Optional[float]:
    """mark_gpt.py reads each sample with int(): a whole number alone (surrounding space allowed)."""
    return float(text.strip()) if re.fullmatch(r"\s*[+-]?\d+\s*", text) else None


class UroBench(SuiteMetric):
    """URO-Bench's mark.py per test set: GPT scores (1-5, x 20), Yes/No accuracy (x 100), Repeat's
    WER rule; one score (0-100) per dialogue, multi-round sets judged as whole conversations."""

    name = "urobench"
    suite = "urobench"
    level = "dialogue"
    judged = frozenset({"open", "semi-open", "qa", "multi", "sa", "sf", "ue", "gs", "ml"})
    description = "URO-Bench scorers per test set (mark.py modes), overall and per ability"
    fields = {"score": FieldInfo(True, "0-100", "URO-Bench score of the dialogue (GPT 1-5 x 20, Yes x 100, "
                                                "Repeat: 100 x (1 - WER) when WER <= 0.5)"),
              "wer": FieldInfo(False, PERCENT, "Repeat: WER between the reply and the sentence to repeat")}
    headlines = catalog.SUITE_HEADLINES["urobench"]
    needs_text: ClassVar[dict[str, str]] = {mode: f"URO-Bench's judge prompt for mode {mode!r} (metrics/mark_gpt.py)"
                                            for mode in judged}
    # The single-round modes: the placeholders of each one's prompt.
    SINGLE = {mode: authors.UROBENCH_PROMPTS[mode][1] for mode in ("open", "semi-open", "qa", "sf", "ue", "gs", "ml")}

    def __init__(self, code: Optional[str] = None) -> None:
        """`code`: a checkout of URO-Bench (else $IVBENCH_UROBENCH_CODE; else none)."""
        super().__init__(authors.urobench_text(code), **({"code": code} if code else {}))

    def scorer_fields(self, scorer: str) -> list[str]:
        return ["score", "wer"] if scorer == "wer" else ["score"]

    def outcome(self, item: DialogueItem) -> Outcome:
        meta = self.metadata(item)
        mode = str(meta["scorer"])
        if mode not in catalog.UROBENCH_SCORED_MODES:
            why = {"srt": "Gemini judging the reply audio", "ge": "emotion2vec on the reply audio"}.get(mode, mode)
            return self.unavailable(mode, Status.MISSING, f"URO-Bench mode {mode!r} needs {why}; not in ivbench")
        if mode == "wer":
            return self._repeat(item, meta)
        if mode in ("multi", "sa"):
            return self._multi(item, mode)
        turn = item.turns[0]
        answer = answer_of(turn) or ""
        values = {"question": turn.record.user_text, "answer": answer, "reference": turn.record.reference or "",
                  "emotion": str(meta.get("emotion", "")), "style": str(meta.get("style", "")),
                  "language": str(meta.get("requirement", ""))}
        if mode in ("open", "semi-open", "qa") and answer in ("", " "):
            # mark_gpt.py: an empty answer scores 0 whatever the judge says.
            return _result({"score": 0.0}, {"rule": "empty answer scores 0 (mark_gpt.py)"})
        messages = self.text.prompts[mode].render({k: values[k] for k in self.SINGLE[mode]})
        if mode == "qa":
            return JudgeJob(messages, lambda texts: _result(
                {"score": 100.0 * fmean(1.0 if t.strip() == "Yes" else 0.0 for t in texts)},
                {"prompt": "urobench-qa", "samples": [t.strip() for t in texts]}))
        return JudgeJob(messages, lambda texts: _mean_samples([parse_uro_score(t) for t in texts], "score", 20.0,
                                                              {"prompt": f"urobench-{mode}"}, "whole-number score"))

    def _multi(self, item: DialogueItem, mode: str) -> Outcome:
        rounds = len(item.turns)
        key = "sa" if mode == "sa" else f"multi-{rounds}"
        if key not in self.text.prompts or (mode == "sa" and rounds != 3):
            return self.unavailable(mode, Status.FAILED, f"URO-Bench has no {mode} prompt for {rounds} rounds")
        name = f"urobench-{key}"
        values: dict[str, str] = {}
        for k, turn in enumerate(item.turns, start=1):
            values.update({f"question{k}": turn.record.user_text, f"answer{k}": answer_of(turn) or "",
                           f"reference{k}": turn.record.reference or ""})
        return JudgeJob(self.text.prompts[key].render(values),
                        lambda texts: _mean_samples([parse_uro_score(t) for t in texts], "score", 20.0,
                                                    {"prompt": name, "rounds": rounds}, "whole-number score"))

    @staticmethod
    def _repeat(item: DialogueItem, meta: dict[str, Any]) -> MetricResult:
        if meta.get("language") != "en":
            return MetricResult({"score": None, "wer": None}, Status.MISSING.value,
                                "Repeat-zh's CER needs cn2an and zhon (URO-Bench's Chinese normaliser); not in ivbench")
        import jiwer

        from ..asr.normalize import normalize_english

        turn = item.turns[0]
        # URO-Bench normalises with its copy of openai-whisper's English normaliser (its
        # `normalizers` folder): the one ivbench's WER uses.
        normalise = normalize_english
        # mark_wer.py's eval_repeat: wer_en(answer, reference), the reply in the reference's place.
        answer = normalise((answer_of(turn) or "").strip().lower())
        target = normalise((turn.record.reference or "").strip().lower())
        try:
            wer = float(jiwer.wer(answer, target))
        except ValueError:  # an empty reply: mark_wer.py counts it as WER 1
            wer = 1.0
        score = 100.0 * (1.0 - wer) if wer <= 0.5 else 0.0
        return _result({"score": score, "wer": wer}, {"rule": "100 x (1 - WER) when WER <= 0.5, else 0"})


# -- Big Bench Audio -------------------------------------------------------------------------------


def parse_verdict(text: str) -> Optional[float]:
    word = text.strip().upper()
    if "INCORRECT" in word:
        return 0.0
    return 1.0 if "CORRECT" in word else None


class BigBenchAudio(SuiteMetric):
    """Artificial Analysis' LLM evaluator: CORRECT/INCORRECT against the official answer."""

    name = "big_bench_audio"
    suite = "big_bench_audio"
    needs = frozenset({Need.TRANSCRIPT, Need.USER_TRANSCRIPT, Need.JUDGE})
    judged = frozenset({"bba"})
    description = "Big Bench Audio: LLM evaluator verdict against the official answer; accuracy per category"
    fields = {"correct": FieldInfo(True, PERCENT, "CORRECT verdict of the LLM evaluator (mean of samples)")}
    headlines = catalog.SUITE_HEADLINES["big_bench_audio"]
    needs_text: ClassVar[dict[str, str]] = {"bba": "Big Bench Audio's LLM evaluator prompt"}

    def __init__(self, prompt_file: Optional[str] = None) -> None:
        """`prompt_file`: the authors' evaluator prompt as a file (else $IVBENCH_BIG_BENCH_AUDIO_PROMPT)."""
        super().__init__(authors.big_bench_audio_text(prompt_file),
                         **({"prompt_file": prompt_file} if prompt_file else {}))

    def precheck(self, item: ScoreItem) -> Optional[MetricResult]:
        early = super().precheck(item)
        if early is None and self._question(item) is None:
            return self.unavailable("bba", Status.MISSING, "no ASR transcript of the question (user_transcript)")
        return early

    @staticmethod
    def _question(item: ScoreItem) -> Optional[str]:
        if item.record.metadata.get("has_text") or not Mode.parse(item.record.mode).speech_in:
            return item.record.user_text
        return item.user_transcript

    def outcome(self, item: ScoreItem) -> Outcome:
        meta = self.metadata(item)
        values = {"question": self._question(item) or "", "official_answer": str(meta["official_answer"]),
                  "candidate_answer": answer_of(item) or ""}
        return JudgeJob(self.text.prompt.render(values),
                        lambda texts: _mean_samples([parse_verdict(t) for t in texts], "correct", 1.0,
                                                    {"prompt": "big-bench-audio"}, "CORRECT/INCORRECT"))
