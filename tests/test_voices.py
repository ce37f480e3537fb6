"""The built-in voices speak real audio with the bundled models, and Whisper understands it.

Offline; each model is loaded once per module. Measured on the 2-core dev machine
(seconds per word of the sentences below, pauses included): piper 0.20–0.34, kokoro
jf_alpha 0.21–0.33, espeak 0.22–0.35; corpus WER of Whisper tiny.en (int8, files packed
into shared windows) on the five sentences: piper 3.9 %, espeak about 2 %.
"""
from __future__ import annotations

import numpy as np
import pytest

from ivbench.asr import WhisperASR, normalize_english, wer, word_errors
from ivbench.types import Audio
from ivbench.voices.espeak import EspeakVoice
from ivbench.voices.kokoro import KokoroVoice
from ivbench.voices.piper import PiperVoice

pytestmark = pytest.mark.slow

KNOWN = "The weather is nice today, so let us go for a walk."
TWO_SENTENCES = "Good morning. How are you today?"
EVERYDAY = [
    "Could you tell me how to get to the train station?",
    "I would like a cup of coffee with milk and no sugar.",
    "My sister is coming to visit us next weekend.",
    "Please remember to turn off the lights before you leave.",
    "We need to buy bread, eggs and fresh vegetables.",
]
# Normal speech runs at 2–4 words a second; these bounds catch truncated audio and runaway
# silence or babble while leaving room for each engine's pace (measured 0.20–0.35 s/word).
SECONDS_PER_WORD = (0.15, 0.6)

ENGINES = {"piper": PiperVoice, "kokoro": KokoroVoice, "espeak": EspeakVoice}
EXPECTED_RATE = {"piper": 22050, "kokoro": 24000, "espeak": 22050}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def voice(request):
    v = ENGINES[request.param]()
    v.load()
    return v


@pytest.fixture(scope="module")
def asr():
    model = WhisperASR()  # bundled tiny.en: onnxruntime float32 encoder, CTranslate2 int8 decoder on the CPU
    model.load()
    return model


def _words(text: str) -> int:
    return len(normalize_english(text).split())


def _check_speech(audio: Audio, voice, text: str) -> None:
    assert isinstance(audio, Audio)
    assert audio.sample_rate == voice.sample_rate == EXPECTED_RATE[voice.engine]
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert np.all(np.isfinite(audio.samples))
    peak = float(np.max(np.abs(audio.samples)))
    assert 0.05 < peak <= 1.0, f"{voice.engine}: peak amplitude {peak}"
    per_word = audio.duration_s / _words(text)
    low, high = SECONDS_PER_WORD
    assert low <= per_word <= high, f"{voice.engine}: {per_word:.3f} s per word"


def test_speaks_known_sentence_deterministically(voice):
    first = voice.speak(KNOWN)
    _check_speech(first, voice, KNOWN)
    second = voice.speak(KNOWN)
    assert np.array_equal(first.samples, second.samples), f"{voice.engine} is not deterministic"


def test_stream_yields_one_chunk_per_sentence(voice):
    chunks = list(voice.stream(TWO_SENTENCES))
    assert len(chunks) == 2
    for chunk, sentence in zip(chunks, ["Good morning.", "How are you today?"]):
        assert chunk.sample_rate == voice.sample_rate
        assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
        assert chunk.duration_s / _words(sentence) >= SECONDS_PER_WORD[0]


def test_identity_names_the_model(voice):
    ident = voice.identity()
    assert ident["engine"] == voice.engine
    digest = ident.get("model_sha256") or ident.get("library_sha256")
    assert isinstance(digest, str) and len(digest) >= 16


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_unknown_variant_is_a_clear_error(engine):
    with pytest.raises(ValueError, match="no-such-voice") as info:
        v = ENGINES[engine]("no-such-voice")
        v.speak("Hello.")
    # The message points at what exists (or, for piper, at how to give a model file).
    assert {"piper": "model=", "kokoro": "jf_alpha", "espeak": "en-us"}[engine] in str(info.value)


def test_kokoro_voices_differ_and_options_are_checked():
    with pytest.raises(ValueError, match="speed"):
        KokoroVoice(speed=5.0)
    a = KokoroVoice("jf_alpha").speak("Thank you.")
    b = KokoroVoice("jm_kumo").speak("Thank you.")
    assert not (a.samples.shape == b.samples.shape and np.array_equal(a.samples, b.samples))


def test_espeak_rate_option_changes_pace():
    slow = EspeakVoice(rate=120).speak(KNOWN).duration_s
    fast = EspeakVoice(rate=260).speak(KNOWN).duration_s
    assert fast < 0.75 * slow
    with pytest.raises(ValueError, match="rate"):
        EspeakVoice(rate=5)


def _corpus_wer(asr, voice) -> tuple[float, float, list[str]]:
    hypotheses = [t.text for t in asr.transcribe_batch([voice.speak(s) for s in EVERYDAY])]
    errors = [word_errors(r, h) for r, h in zip(EVERYDAY, hypotheses)]
    corpus = sum(e for e, _ in errors) / sum(n for _, n in errors)
    mean = float(np.mean([wer(r, h) for r, h in zip(EVERYDAY, hypotheses)]))
    print(f"\n{voice.engine}/{voice.variant}: corpus WER {corpus:.3f}, mean per-utterance "
          f"WER {mean:.3f}")
    for h in hypotheses:
        print("   ", h)
    return corpus, mean, hypotheses


def test_piper_is_transcribed_almost_exactly(asr):
    corpus, _, _ = _corpus_wer(asr, PiperVoice())
    assert corpus < 0.10


@pytest.mark.parametrize("engine,bound", [("kokoro", 0.15), ("espeak", 0.35)])
def test_kokoro_and_espeak_are_intelligible(asr, engine, bound):
    # Measured: kokoro jf_alpha 0.0, espeak en-us 0.137 (formant speech; tiny.en mishears
    # a few short function words).
    corpus, _, _ = _corpus_wer(asr, ENGINES[engine]())
    assert corpus < bound


def test_whisper_edges(asr):
    assert asr.transcribe(Audio(np.zeros(0, dtype=np.float32), 16000)).text == ""
    ident = asr.identity()
    assert ident["backend"] == "faster-whisper" and ident["model_sha256"]
    assert ident["language"] == "en" and ident["beam_size"] == 1
    with pytest.raises(ValueError, match="backend"):
        WhisperASR(backend="nope")


def test_normalize_and_wer():
    assert normalize_english("Hello, World!  It's  well-known.") == "hello world it is well known"
    assert normalize_english("I don’t know") == "i don t know"  # Whisper's rules: ’ is a symbol
    assert wer("The cat sat on the mat.", "the cat sat on a mat") == pytest.approx(1 / 6)
    assert wer("", "") == 0.0 and wer("", "words") == 1.0 and wer("two words", "") == 1.0
    assert word_errors("a b c", "a x c d") == (2, 3)
