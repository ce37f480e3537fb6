"""Whisper transcription one file at a time vs packed into shared windows (ivbench.asr).

Speaks ~30 varied sentences with the bundled Piper voice (deterministic), transcribes them
every way below with the same loaded model, and prints seconds per minute of audio (wall
clock, best of --repeats, and the process's CPU seconds) and WER against the known text
(corpus WER = Σ errors / Σ reference words, and the mean of per-file WER):

- one file per window (the default): `WhisperASR(batch_size=1)` (files side by side, one per
  core) and `WhisperASR(batch_size=8, workers=1)` (one batch of 8 files, each in its own
  window), with and without word timestamps;
- packed (opt-in): `WhisperASR(pack=True)`: short files share 28 s windows with 1 s
  of silence between them, the window is transcribed once and its words split back per file
  by their timestamps (and the same with 0.5 s gaps);
- faster-whisper's BatchedInferencePipeline, one clip per file (per-file results directly,
  but one encoder window per file), and one clip per packed window (its chunks decode
  without the sequential seek loop, so a chunk whose decoding stops early loses its rest).

    python benchmarks/asr_batching.py [--repeats 2] [--device cpu] [--model PATH_OR_NAME]

The machine's load average is printed before and after: other work on the machine makes
wall-clock numbers noisy (CPU seconds less so).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from collections.abc import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivbench.asr import WhisperASR, wer, word_errors  # noqa: E402
from ivbench.asr.packing import join_window, plan_windows, split_words, words_text  # noqa: E402
from ivbench.asr.whisper import GAP_S, SAMPLE_RATE, WINDOW_S  # noqa: E402
from ivbench.audio import resample  # noqa: E402
from ivbench.types import Audio  # noqa: E402

SENTENCES = [
    "Could you tell me how to get to the train station?",
    "I would like a cup of coffee with milk and no sugar.",
    "My sister is coming to visit us next weekend.",
    "Please remember to turn off the lights before you leave.",
    "We need to buy bread, eggs and fresh vegetables.",
    "The meeting has been moved to Thursday afternoon.",
    "Yes.",
    "What time does the library close on Sundays?",
    "He forgot his umbrella, so he got completely soaked on the way home.",
    "Thank you very much for your help.",
    "The children played in the garden until it got dark.",
    "Can you recommend a good book about the history of science?",
    "It is going to rain later, so take a jacket with you.",
    "Our flight leaves at seven in the morning.",
    "I think the restaurant on the corner serves the best pizza in town.",
    "How long does it take to learn a new language?",
    "She plays the piano every evening after dinner.",
    "The museum is closed for repairs until the end of the month.",
    "Good morning!",
    "Photosynthesis is the process by which plants turn sunlight into energy.",
    "Would you mind opening the window a little?",
    "The doctor said I should drink more water and get more sleep.",
    "Let us meet in front of the cinema at half past eight.",
    "Why is the sky blue during the day but red at sunset?",
    "I have lived in this city for almost ten years.",
    "The new bridge will make the journey to work much shorter.",
    "Do not forget to water the plants while I am away.",
    "A healthy breakfast gives you energy for the whole morning.",
    "Explain the difference between weather and climate in simple words.",
    "The train was delayed because of the heavy snow. We arrived two hours late, tired but happy.",
]


def _speak() -> list[Audio]:
    from ivbench.voices.piper import PiperVoice

    voice = PiperVoice()
    return [voice.speak(s) for s in SENTENCES]


def _pipeline_per_file(asr: WhisperASR, audios: list[Audio]) -> list[str]:
    """BatchedInferencePipeline, one clip per file (files laid end to end)."""
    from faster_whisper import BatchedInferencePipeline

    arrays = [resample(a, SAMPLE_RATE).samples for a in audios]
    starts = np.cumsum([0] + [len(a) for a in arrays[:-1]])
    clips = [{"start": s / SAMPLE_RATE, "end": (s + len(a)) / SAMPLE_RATE} for s, a in zip(starts, arrays)]
    segments, _ = BatchedInferencePipeline(asr._model).transcribe(
        np.concatenate(arrays), language=asr.language, beam_size=asr.beam_size, temperature=0.0,
        clip_timestamps=clips, batch_size=8)
    by_clip: dict[int, list[str]] = {}
    for seg in segments:
        by_clip.setdefault(seg.seek, []).append(seg.text.strip())
    return [" ".join(by_clip.get(int(s / SAMPLE_RATE * 100), [])) for s in starts]


def _pipeline_packed(asr: WhisperASR, audios: list[Audio]) -> list[str]:
    """BatchedInferencePipeline, one clip per packed window, words split back per file."""
    from faster_whisper import BatchedInferencePipeline

    arrays = [resample(a, SAMPLE_RATE).samples for a in audios]
    windows, alone = plan_windows([len(a) / SAMPLE_RATE for a in arrays], WINDOW_S, GAP_S, 8)
    parts, clips, offsets = [], [], []
    pos = 0
    for w in windows:
        samples = join_window(w, arrays, SAMPLE_RATE)
        parts.append(samples)
        clips.append({"start": pos / SAMPLE_RATE, "end": (pos + len(samples)) / SAMPLE_RATE})
        offsets.append(pos / SAMPLE_RATE)
        pos += len(samples)
    segments, _ = BatchedInferencePipeline(asr._model).transcribe(
        np.concatenate(parts), language=asr.language, beam_size=asr.beam_size, temperature=0.0,
        clip_timestamps=clips, batch_size=8, word_timestamps=True)
    words: dict[int, list] = {}
    for seg in segments:
        words.setdefault(seg.seek, []).extend((w.word, w.start, w.end) for w in seg.words or [])
    texts = [""] * len(arrays)
    for w, off in zip(windows, offsets):
        heard = words.get(int(off * 100), [])
        spans = [(s + off, e + off) for s, e in w.spans]
        for i, ws in zip(w.indices, split_words(heard, spans)):
            texts[i] = words_text(ws)
    for i in alone:
        texts[i] = asr.transcribe(audios[i]).text
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="faster-whisper model (default: bundled tiny.en)")
    parser.add_argument("--compute-type", default=None)
    parser.add_argument("--show-errors", action="store_true", help="print each mis-transcribed file")
    args = parser.parse_args()

    load_before = os.getloadavg()
    audios = _speak()
    minutes = sum(a.duration_s for a in audios) / 60.0

    def make(**kw) -> WhisperASR:
        asr = WhisperASR(model=args.model, device=args.device, compute_type=args.compute_type, **kw)
        asr.load()
        return asr

    one = make(batch_size=1)
    one_nowords = make(batch_size=1, word_timestamps=False)
    batch8 = make(batch_size=8, workers=1)
    packed = make(pack=True)
    packed_half = make(pack=True, gap_s=0.5)
    for asr in (one, one_nowords, packed, packed_half):  # share one loaded model
        asr._model = one._model
    one.transcribe(audios[0])  # first-call costs out of the timings

    ways: list[tuple[str, Callable[[], list[str]]]] = [
        ("one-by-one, no word timestamps", lambda: [t.text for t in one_nowords.transcribe_batch(audios)]),
        ("one-by-one, word timestamps", lambda: [t.text for t in one.transcribe_batch(audios)]),
        ("batches of 8, each file its own window", lambda: [t.text for t in batch8.transcribe_batch(audios)]),
        (f"packed {WINDOW_S:.0f} s windows, {GAP_S} s gaps (opt-in pack=true)",
         lambda: [t.text for t in packed.transcribe_batch(audios)]),
        (f"packed {WINDOW_S:.0f} s windows, 0.5 s gaps",
         lambda: [t.text for t in packed_half.transcribe_batch(audios)]),
        ("BatchedInferencePipeline, clip per file", lambda: _pipeline_per_file(one, audios)),
        ("BatchedInferencePipeline, clip per window", lambda: _pipeline_packed(one, audios)),
    ]
    rows = []
    for label, fn in ways:
        best_wall, best_cpu, texts, stable = float("inf"), float("inf"), None, True
        for _ in range(max(1, args.repeats)):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            out = fn()
            best_wall = min(best_wall, time.perf_counter() - wall0)
            best_cpu = min(best_cpu, time.process_time() - cpu0)
            stable = stable and (texts is None or texts == out)
            texts = out
        counts = [word_errors(r, h) for r, h in zip(SENTENCES, texts)]
        corpus = sum(e for e, _ in counts) / sum(n for _, n in counts)
        mean = float(np.mean([wer(r, h) for r, h in zip(SENTENCES, texts)]))
        wrong = [(r, h) for r, h in zip(SENTENCES, texts) if word_errors(r, h)[0]]
        rows.append((label, best_wall / minutes, best_cpu / minutes, corpus, mean, len(wrong), stable))
        if args.show_errors:
            for r, h in wrong:
                print(f"  [{label}] {r!r} -> {h!r}")

    print(f"\n{len(audios)} Piper sentences, {minutes * 60:.1f} s of audio; model "
          f"{packed.identity()['model']} ({packed.compute_type}) on {args.device}; "
          f"best of {args.repeats}; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)\n")
    head = f"{'way':<44} {'wall s/audio min':>16} {'CPU s/audio min':>15} {'corpus WER':>10} " \
           f"{'mean WER':>8} {'files wrong':>11} {'same twice':>10}"
    print(head)
    print("-" * len(head))
    for label, wall, cpu, corpus, mean, wrong, stable in rows:
        print(f"{label:<44} {wall:>16.2f} {cpu:>15.2f} {corpus:>10.3f} {mean:>8.3f} "
              f"{wrong:>8}/{len(SENTENCES):<2} {'yes' if stable else 'NO':>10}")


if __name__ == "__main__":
    main()
