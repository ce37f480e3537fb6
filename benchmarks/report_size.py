"""Report time and size: 200 dialogues × 3 systems with every clip embedded.

    python benchmarks/report_size.py [--dialogues 200] [--shapes single,multi] [--asr-check 20]

Builds three run directories cheaply from real speech: the demo task's user turns and
reference answers spoken once by each of three voices (Piper joe, eSpeak, Kokoro), then
reused for every dialogue with a different few samples of leading silence, so that every
clip is a distinct file (the report's audio cache cannot share work between them). A reply
is the user turn and its reference answer spoken one after the other (about 6 s), as a
spoken answer would be; user turns are Piper speech, the same bytes in all three runs, as
with real runs that share the user-voice cache. Each run has latency, ASR-WER (with word
alignments), DNSMOS, judge (with raw replies) and first-speech results, so the page holds
everything a scored run's report holds.

Shapes: "single" is one turn per dialogue (the shape of InstructS2S-Eval, 199 dialogues);
"multi" is the demo task's 2–4 turns per dialogue (2.8 on average).

Then it renders the report twice with a fresh audio cache: cold (every clip encoded) and
warm (the cache filled, as when a report is rendered again), and prints wall time, CPU
time, the file size and what it is made of. --asr-check N transcribes N replies of each
voice with Whisper tiny.en from the WAV and from the embedded Opus, as a check that the
compression keeps the speech intelligible.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ivbench import registry
from ivbench.audio import concat, write_wav
from ivbench.registry import parse_spec
from ivbench.types import Audio, TurnRecord

VOICES = {"sys-piper": "piper:joe", "sys-espeak": "espeak", "sys-kokoro": "kokoro"}
USER_VOICE = "piper:joe"
MB = 1024 * 1024
# Attachment limits count the MIME (base64) encoding, which makes a file 37% larger.
MAIL_LIMITS = {"Gmail 25 MB": 25 / 1.37, "Outlook.com 20 MB": 20 / 1.37}


def speak_pool(texts: list[str], voice_spec: str, folder: Path) -> dict[str, Audio]:
    """Each text spoken by the voice; kept in `folder`, so that a rerun with --keep reuses them."""
    from ivbench.audio import read_audio

    folder = folder / re.sub(r"[^A-Za-z0-9]+", "_", voice_spec)
    paths = {t: folder / f"{i:03d}.wav" for i, t in enumerate(texts)}
    if not all(p.exists() for p in paths.values()):
        voice = registry.create("voices", parse_spec(voice_spec))
        voice.load("cpu")
        for t, p in paths.items():
            write_wav(p, voice.speak(t))
    return {t: read_audio(p) for t, p in paths.items()}


def shifted(audio: Audio, samples: int) -> Audio:
    """The clip with `samples` of leading silence: a distinct file that sounds the same."""
    return Audio(np.concatenate([np.zeros(samples, dtype=np.float32), audio.samples]), audio.sample_rate)


def scores_for(record: TurnRecord, rng: random.Random, quality: float) -> list[dict]:
    from ivbench.metrics.wer import compare

    base = {"system": record.system, "dialogue_id": record.dialogue_id, "turn_index": record.turn_index,
            "mode": record.mode}
    words = (record.reply_text or "").split()
    heard = list(words)
    for _ in range(rng.choice([0, 0, 1, 2])):  # a few ASR slips
        i = rng.randrange(len(heard))
        heard[i] = rng.choice(["", heard[i] + "s", "the"])
    wer = compare(record.reply_text or "", " ".join(w for w in heard if w))
    judge = min(5, max(1, round(rng.gauss(3.2 + quality, 0.9))))
    raw = f"Score: {judge}\n" + "The reply addresses the question and stays on topic; " * rng.randint(1, 3)
    latency = {k: getattr(record, k) for k in ("first_audio_ms", "first_text_ms", "end_ms", "rtf")}
    return [
        {**base, "metric": "latency", "values": latency, "status": "ok", "reason": None, "details": {}},
        {**base, "metric": "first_speech", "status": "ok", "reason": None, "details": {},
         "values": {"first_speech_ms": record.first_audio_ms + rng.uniform(20, 150), "vad_onset_ms": 60.0}},
        {**base, "metric": "asr_wer", **wer.to_json()},
        {**base, "metric": "dnsmos", "status": "ok", "reason": None, "details": {"windows": 1},
         "values": {k: rng.gauss(2.6 + quality, 0.2) for k in ("sig", "bak", "ovrl", "p808")}},
        {**base, "metric": "judge", "status": "ok", "reason": None, "values": {"score": float(judge)},
         "details": {"raw_replies": [raw], "judge_model": "synthetic-judge", "prompt": "llama-omni"}},
    ]


def build_runs(root: Path, shape: str, n_dialogues: int, pools: dict[str, dict[str, Audio]],
               items: list[tuple[str, str]], dialogues: list[list[int]]) -> list[Path]:
    rng = random.Random(0)
    runs = []
    for quality, (system, voice) in enumerate(VOICES.items()):
        run = root / f"{shape}-{system}"
        records = []
        for k in range(n_dialogues):
            turns = dialogues[k % len(dialogues)] if shape == "multi" else [k % len(items)]
            for t, item in enumerate(turns):
                user_text, reference = items[item]
                dialogue_id = f"d{k:03d}"
                user_rel = f"audio/user/{dialogue_id}/turn{t}.wav"
                reply_rel = f"audio/{system}/{dialogue_id}/turn{t}.wav"
                write_wav(run / user_rel, shifted(pools[USER_VOICE][user_text], k + 1))
                reply = shifted(concat([pools[voice][user_text], pools[voice][reference]], "reply"), k + 1)
                write_wav(run / reply_rel, reply)
                first = rng.lognormvariate(np.log(300 + 400 * quality), 0.4)
                failed = rng.random() < 0.01
                records.append(TurnRecord(
                    system=system, task="synthetic", dialogue_id=dialogue_id, turn_index=t, n_turns=len(turns),
                    mode="s2s", attempt=1, status="failed" if failed else "ok", user_text=user_text,
                    user_audio=user_rel, reference=reference, reply_text=None if failed else f"{user_text} {reference}",
                    reply_audio=None if failed else reply_rel, reply_sample_rate=reply.sample_rate,
                    reply_duration_s=reply.duration_s, first_audio_ms=None if failed else first,
                    first_text_ms=None if failed else 1.0, end_ms=None if failed else first + 200,
                    rtf=None if failed else 0.1 + 0.1 * quality, events=[], stages={},
                    error=({"type": "RuntimeError", "message": "synthetic failure", "traceback": ""}
                           if failed else None)))
        with open(run / "records.jsonl", "w") as f:
            f.writelines(json.dumps(r.to_json()) + "\n" for r in records)
        with open(run / "scores.jsonl", "w") as f:
            for r in records:
                rows = scores_for(r, rng, quality * 0.3) if r.ok else []
                f.writelines(json.dumps(row) + "\n" for row in rows)
        manifest = {"config": {"task": "synthetic", "systems": [system], "voice": USER_VOICE, "seed": 0,
                               "mode": ["s2s"]},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                    "task": {"name": "synthetic", "n_dialogues": n_dialogues, "source": "benchmarks/report_size.py"},
                    "hardware": {"cpu_count": os.cpu_count(), "device": "cpu"}, "ivbench_version": "bench"}
        (run / "manifest.json").write_text(json.dumps(manifest))
        runs.append(run)
    return runs


def audio_seconds(runs: list[Path]) -> tuple[int, float]:
    import soundfile

    files = {p.resolve() for run in runs for p in run.glob("audio/**/*.wav")}
    # User turns are the same bytes in every run and embedded once: count one run's.
    user = [p for p in files if "/audio/user/" in str(p) and str(p).startswith(str(runs[0].resolve()))]
    replies = [p for p in files if "/audio/user/" not in str(p)]
    return len(user) + len(replies), sum(soundfile.info(str(p)).duration for p in user + replies)


def render(runs: list[Path], out: Path, cache: Path) -> tuple[float, float]:
    from ivbench.report import write_report

    wall, cpu = time.perf_counter(), time.process_time()
    write_report(runs, out, cache_dir=cache)
    return time.perf_counter() - wall, time.process_time() - cpu


def composition(page: str) -> tuple[float, float, float]:
    audio = sum(len(m) for m in re.findall(r'src="data:audio/ogg;base64,[^"]*"', page))
    svg = sum(len(m) for m in re.findall(r"<svg.*?</svg>", page, flags=re.S))
    return audio / MB, svg / MB, (len(page) - audio - svg) / MB


def decode_opus(blob: bytes) -> Audio:
    """Ogg/Opus bytes back to samples, with libopus (libsndfile refuses one-page files)."""
    import av

    with av.open(io.BytesIO(blob)) as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    return Audio(np.concatenate(frames).astype(np.float32), rate)


def asr_check(runs: list[Path], n: int) -> None:
    from ivbench.asr.normalize import word_errors
    from ivbench.asr.whisper import WhisperASR
    from ivbench.audio import read_audio
    from ivbench.report.audio import BITRATE, encode_opus

    asr = WhisperASR()
    asr.load()
    print(f"\nIntelligibility: Whisper tiny.en WER of {n} replies per voice, "
          f"WAV vs embedded Opus {BITRATE // 1000} kb/s")
    print(f"{'voice':<12} {'WAV WER':>8} {'Opus WER':>9}")
    for run in runs:
        records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
        records = [r for r in records if r["reply_audio"]][:n]
        errors = {"wav": [0, 0], "opus": [0, 0]}
        for r in records:
            wav = read_audio(run / r["reply_audio"])
            for kind, audio in (("wav", wav), ("opus", decode_opus(encode_opus(run / r["reply_audio"])))):
                heard = asr.transcribe(audio)
                e, words = word_errors(r["reply_text"], getattr(heard, "text", heard))
                errors[kind][0] += e
                errors[kind][1] += words
        name = run.name.split("-", 1)[1]
        print(f"{name:<12} {errors['wav'][0] / errors['wav'][1]:>8.3f} {errors['opus'][0] / errors['opus'][1]:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dialogues", type=int, default=200)
    parser.add_argument("--shapes", default="single,multi")
    parser.add_argument("--asr-check", type=int, default=0, metavar="N")
    parser.add_argument("--keep", type=Path, help="Keep the runs and reports in this folder.")
    args = parser.parse_args()

    task = registry.create("tasks", parse_spec("demo"))
    items, dialogues = [], []
    for d in task.dialogues:
        dialogues.append([])
        for turn in d.turns:
            dialogues[-1].append(len(items))
            items.append((turn.text, turn.reference or "I am not sure."))
    texts = sorted({t for pair in items for t in pair})
    root = args.keep or Path(tempfile.mkdtemp(prefix="ivbench-report-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pools = {spec: speak_pool(texts, spec, root / "voices") for spec in dict.fromkeys([USER_VOICE, *VOICES.values()])}
    print(f"spoke {len(texts)} texts with {len(pools)} voices in {time.perf_counter() - start:.0f} s (not timed below)")
    rows = []
    for shape in args.shapes.split(","):
        runs = build_runs(root, shape, args.dialogues, pools, items, dialogues)
        turns = sum(len((r / "records.jsonl").read_text().splitlines()) for r in runs)
        clips, seconds = audio_seconds(runs)
        cache = root / f"cache-{shape}"
        shutil.rmtree(cache, ignore_errors=True)
        out = root / f"report-{shape}.html"
        load = os.getloadavg()[0]
        cold = render(runs, out, cache)
        warm = render(runs, out, cache)
        page = out.read_text()
        size = out.stat().st_size / MB
        zipped = len(gzip.compress(page.encode(), 6)) / MB
        audio_mb, svg_mb, rest_mb = composition(page)
        rows.append((shape, turns, clips, seconds / 60, cold, warm, size, audio_mb, svg_mb, rest_mb, zipped, load))
        if args.asr_check and shape == args.shapes.split(",")[0]:
            asr_check(runs, args.asr_check)

    print(f"\n{args.dialogues} dialogues × {len(VOICES)} systems, every clip embedded "
          f"(os.cpu_count() = {os.cpu_count()})")
    print(f"{'shape':<7} {'turns':>6} {'clips':>6} {'audio min':>9} {'cold s (CPU s)':>15} {'warm s (CPU s)':>15} "
          f"{'file MB':>8} {'audio':>6} {'plots':>6} {'rest':>5} {'gzip MB':>8} {'KB/audio min':>12} {'load':>5}")
    for shape, turns, clips, minutes, cold, warm, size, audio_mb, svg_mb, rest_mb, zipped, load in rows:
        print(f"{shape:<7} {turns:>6} {clips:>6} {minutes:>9.1f} {cold[0]:>7.1f} ({cold[1]:>5.1f}) "
              f"{warm[0]:>7.1f} ({warm[1]:>5.1f}) {size:>8.1f} {audio_mb:>6.1f} {svg_mb:>6.2f} {rest_mb:>5.1f} "
              f"{zipped:>8.1f} {audio_mb * 1024 / minutes:>12.0f} {load:>5.1f}")
        fits = [name for name, limit in MAIL_LIMITS.items() if size <= limit]
        print(f"        e-mail: {'fits ' + ', '.join(fits) if fits else 'too large for common attachment limits'} "
              "(limits count base64: the file may be 1/1.37 of the limit)")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
