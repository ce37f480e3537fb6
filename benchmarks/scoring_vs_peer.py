"""`ivbench score --metrics asr_wer,dnsmos` against the way peers score the same replies.

The peer way, implemented here: openai-whisper tiny.en in float32, one file at a time
(`model.transcribe(audio)` with its defaults), Whisper's English normaliser and jiwer per
file; DNSMOS by `speechmos.dnsmos.run` per file. Both use the same weights (the Whisper
tiny.en bundled with ivbench, converted to openai-whisper's .pt layout, and speechmos' ONNX
files) and the same 16 kHz samples (soundfile + soxr HQ, as ivbench reads them), so the
differences are the scorers'. (librosa.load, the other usual reader, gives one sample more
here and there, and that alone moves DNSMOS of a clip shorter than 9 s by up to 0.2: DNSMOS
repeats a short clip to fill its 9 s window, so its length decides where the copies meet.)

The corpus is built here with the bundled voices (Piper joe, Kokoro jf_alpha, eSpeak NG):
replies of 5-20 s, each in three conditions (clean; white noise at 5 dB SNR; band-limited to
8 kHz), played into a run directory by `CorpusPlayer` through `ivbench eval --mode t2s`, so
`ivbench score` reads a real run. Peer and ivbench then run interleaved (peer, ivbench, peer,
ivbench, …), each in a fresh process, so each includes its imports and model loads.

Printed: seconds per audio minute for each and the ratio per stage (ASR, DNSMOS, the rest:
interpreter, imports, reading the run), corpus WER and mean per-reply WER per condition for
both, per-reply WER differences (mean, max, the worst replies), the largest DNSMOS difference;
with --pack also ivbench's opt-in packed transcripts against its default ones; with
--profile where the time of each goes (Whisper encoder / decoder / alignment, DNSMOS network
parts), measured in one process; with --floor the least time ivbench could take on this machine at
per-reply fidelity (exact DNSMOS with a clip per core, plus one Whisper encoder window per reply
with the cores shared perfectly) and the most that allows against the peer.

    python benchmarks/scoring_vs_peer.py                  # the measurement: needs an idle machine
    python benchmarks/scoring_vs_peer.py --quick --force  # dry run under load: NOT a measurement

It refuses to measure when the 1-minute load average is above 1 (other work on the machine
makes the ratios meaningless) unless --force is given, and then every table says so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivbench.systems.base import Session, System  # noqa: E402
from ivbench.types import AudioChunk, Mode, ReplyEvent, TextDelta, TurnInput  # noqa: E402

SENTENCES = [
    "Could you tell me how to get to the train station?",
    "I would like a cup of coffee with milk and no sugar.",
    "My sister is coming to visit us next weekend.",
    "Please remember to turn off the lights before you leave.",
    "We need to buy bread, eggs and fresh vegetables.",
    "The meeting has been moved to Thursday afternoon.",
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
    "The train was delayed because of the heavy snow, so we arrived two hours late.",
    "Most birds build their nests in spring, when food is easy to find.",
    "You can pay by card or in cash at the front desk.",
    "The recipe needs two cups of flour, three eggs and a pinch of salt.",
    "If you have any questions, I am happy to explain it again.",
]
VOICES = ("piper:joe", "kokoro:jf_alpha", "espeak")
CONDITIONS = ("clean", "noise5db", "8khz")
MIN_S, MAX_S = 5.0, 20.0


# -- the player: a system that speaks the corpus back into a run directory -----------------

class _PlayerSession(Session):
    def __init__(self, index: dict[str, Any]) -> None:
        self.index = index

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        import soundfile

        entry = self.index[turn.text.strip()]
        samples, rate = soundfile.read(entry["wav"], dtype="float32")
        yield TextDelta(entry["text"])
        yield AudioChunk(samples, rate)


class CorpusPlayer(System):
    """Replies to a turn whose text is a corpus id with that reply's text and audio."""

    modes = (Mode.T2S,)

    def __init__(self, index: str = "") -> None:
        super().__init__(index=index)
        self._index_path = index
        self.index: dict[str, Any] = {}

    def load(self, device: str) -> None:
        self.index = {e["id"]: e for e in json.loads(Path(self._index_path).read_text())}

    def new_session(self) -> _PlayerSession:
        return _PlayerSession(self.index)


# -- the corpus -------------------------------------------------------------------------

def _degrade(samples: np.ndarray, rate: int, condition: str, seed: int) -> tuple[np.ndarray, int]:
    import soxr

    if condition == "noise5db":
        power = float(np.mean(samples.astype(np.float64) ** 2))
        noise = np.random.default_rng(seed).standard_normal(len(samples)) * np.sqrt(power / 10 ** 0.5)
        return np.clip(samples + noise, -1.0, 1.0).astype(np.float32), rate
    if condition == "8khz":
        return soxr.resample(samples, rate, 8000, quality="HQ").astype(np.float32), 8000
    return samples, rate


def build_corpus(work: Path, n_texts: int) -> list[dict[str, Any]]:
    """`n_texts` replies per voice cycle, each in the three conditions; cached in `work`."""
    import soundfile

    from ivbench import registry

    index_path = work / f"corpus_{n_texts}.json"
    if index_path.is_file():
        return json.loads(index_path.read_text())
    rng = np.random.default_rng(0)
    voices = {spec: registry.create("voices", registry.parse_spec(spec)) for spec in VOICES}
    entries = []
    for i in range(n_texts):
        spec = VOICES[i % len(VOICES)]
        k = int(rng.integers(1, 5))
        order = [int(j) for j in rng.permutation(len(SENTENCES))]
        while True:  # grow or shrink the reply until it lasts 5-20 s in this voice
            text = " ".join(SENTENCES[j] for j in order[:k])
            audio = voices[spec].speak(text)
            if audio.duration_s < MIN_S and k < len(SENTENCES):
                k += 1
            elif audio.duration_s > MAX_S and k > 1:
                k -= 1
            else:
                break
        for c, condition in enumerate(CONDITIONS):
            samples, rate = _degrade(audio.samples, audio.sample_rate, condition, seed=1000 * i + c)
            rid = f"r{i:03d}-{condition}"
            wav = work / "audio" / f"{rid}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(wav), samples, rate, subtype="FLOAT")
            entries.append({"id": rid, "text": text, "voice": spec, "condition": condition,
                            "wav": str(wav), "duration_s": len(samples) / rate})
        print(f"  corpus {i + 1}/{n_texts}: {spec}, {audio.duration_s:.1f} s", file=sys.stderr)
    index_path.write_text(json.dumps(entries, indent=1))
    return entries


def make_run(work: Path, corpus: list[dict[str, Any]], n_texts: int) -> Path:
    """The corpus as an ivbench run directory (`ivbench eval` with the player, no scoring)."""
    run = work / f"run_{n_texts}"
    if (run / "records.jsonl").is_file():
        return run
    task = work / f"corpus_{n_texts}.jsonl"
    task.write_text("".join(json.dumps({"id": e["id"], "turns": [e["id"]]}) + "\n" for e in corpus))
    system = f"{Path(__file__).resolve()}:CorpusPlayer:index={work / f'corpus_{n_texts}.json'}"
    cmd = [sys.executable, "-m", "ivbench.cli", "eval", "--task", str(task), "--system", system,
           "--mode", "t2s", "--warmup", "0", "--no-score", "--no-progress", "--out", str(run)]
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    return run


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


# -- the two ways, each in a child process ------------------------------------------------

def _replies(run: Path) -> list[dict[str, Any]]:
    """(dialogue id, reply text, wav path) of each recorded turn, in id order."""
    rows = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if line.strip()]
    return sorted(({"id": r["dialogue_id"], "text": r["reply_text"], "wav": str(run / r["reply_audio"])}
                   for r in rows if r.get("reply_audio")), key=lambda r: r["id"])


def _read_16k(path: str, soundfile: Any, soxr: Any) -> np.ndarray:
    samples, rate = soundfile.read(path, dtype="float32")
    return samples if rate == 16000 else soxr.resample(samples, rate, 16000, quality="HQ").astype(np.float32)


def child_peer(run: Path, out: Path) -> None:
    """openai-whisper fp32 one file at a time + Whisper's normaliser + jiwer; speechmos per file."""
    t0 = time.perf_counter()
    import jiwer
    import soundfile
    import soxr
    import whisper
    from speechmos import dnsmos
    from whisper.normalizers import EnglishTextNormalizer

    from ivbench.asr.whisper import _bundled_openai_checkpoint

    model = whisper.load_model(str(_bundled_openai_checkpoint()), device="cpu")
    normalise = EnglishTextNormalizer()
    t_loaded = time.perf_counter()
    replies = _replies(run)
    audios = [_read_16k(r["wav"], soundfile, soxr) for r in replies]
    t_read = time.perf_counter()
    files = []
    for r, audio in zip(replies, audios):
        heard = model.transcribe(audio, fp16=False)["text"]
        ref, hyp = normalise(r["text"]), normalise(heard)
        m = jiwer.process_words(ref, hyp) if ref and hyp else None
        errors = (m.substitutions + m.deletions + m.insertions) if m else max(len(ref.split()), len(hyp.split()))
        files.append({"id": r["id"], "transcript": heard, "errors": errors, "ref_words": len(ref.split())})
    t_asr = time.perf_counter()
    for f, audio in zip(files, audios):
        d = dnsmos.run(np.clip(audio, -1.0, 1.0), 16000)  # it refuses resampling's overshoot
        f["dnsmos"] = {"sig": float(d["sig_mos"]), "bak": float(d["bak_mos"]), "ovrl": float(d["ovrl_mos"]),
                       "p808": float(d["p808_mos"])}
    t_end = time.perf_counter()
    out.write_text(json.dumps({"files": files, "stages": {
        "imports+load": t_loaded - t0, "read": t_read - t_loaded, "asr": t_asr - t_read, "dnsmos": t_end - t_asr}}))


def child_ivbench(run: Path, out: Path, metrics: str) -> None:
    """`ivbench score RUN --metrics …`, with each metric's time noted (no other change)."""
    t0 = time.perf_counter()
    from ivbench.scoring import run as scoring
    from ivbench.cli import main

    stages: dict[str, float] = {}
    inner = scoring._run_metric

    def timed(label: str, metric: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(label, metric, *args, **kwargs)
        finally:
            stages[metric.name] = stages.get(metric.name, 0.0) + time.perf_counter() - start

    scoring._run_metric = timed  # type: ignore[assignment]
    try:
        main(["score", str(run), "--metrics", metrics, "--no-cache", "--no-progress", "--device", "cpu"],
             standalone_mode=False)
    finally:
        scoring._run_metric = inner  # type: ignore[assignment]
    total = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines() if line.strip()]
    files: dict[str, dict[str, Any]] = {}
    for row in rows:
        f = files.setdefault(row["dialogue_id"], {"id": row["dialogue_id"]})
        name = row["metric"].split(":")[0]
        if name == "transcript":
            f["transcript"] = row["details"].get("text", "")
        elif name == "asr_wer":
            f["errors"], f["ref_words"] = row["values"]["errors"], row["values"]["ref_words"]
        elif name == "dnsmos":
            f["dnsmos"] = row["values"]
    stages["rest"] = total - sum(stages.values())
    out.write_text(json.dumps({"files": sorted(files.values(), key=lambda f: f["id"]), "stages": stages}))


def _child(kind: str, run: Path, work: Path, n: int, metrics: str = "") -> tuple[float, dict[str, Any]]:
    out = work / f"out_{kind}_{n}.json"
    cmd = [sys.executable, __file__, "--child", kind, "--run", str(run), "--child-out", str(out)]
    if metrics:
        cmd += ["--metrics", metrics]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, json.loads(out.read_text())


# -- where the time goes (one process) ----------------------------------------------------

def profile(run: Path, limit: int) -> list[str]:
    """Per-part times of ivbench's Whisper and DNSMOS and the peer's Whisper, on `limit` replies."""
    import ctranslate2
    import soundfile
    import soxr
    import whisper

    from ivbench.asr import batched
    from ivbench.asr.whisper import WhisperASR, _bundled_openai_checkpoint
    from ivbench.metrics.mos._dnsmos_engine import FastDNSMOS

    replies = _replies(run)[:limit]
    audios = [_read_16k(r["wav"], soundfile, soxr) for r in replies]
    minutes = sum(len(a) for a in audios) / 16000 / 60
    parts: dict[str, float] = {}

    def clock(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - start
        return result

    asr = WhisperASR()
    clock("whisper load", asr.load)
    m = asr._model
    tokenizer = batched._tokenizer(m, "en")
    kwargs = batched._generate_kwargs(m, tokenizer, 1)
    for audio in audios:
        feats = clock("whisper features", m.feature_extractor, audio)
        window, size = batched._window(m, batched._File(feats))
        batch = np.ascontiguousarray(window[None], dtype=np.float32)
        enc = ctranslate2.StorageView.from_array(clock("whisper encoder (30 s window; onnxruntime fp32)",
                                                       m.ivbench_encoder, batch))
        clock("  [not used] CTranslate2 int8 encoder", m.model.encode, ctranslate2.StorageView.from_array(batch))
        res = clock("whisper decoder", m.model.generate, enc, [list(tokenizer.sot_sequence)], **kwargs)[0]
        text = [t for t in res.sequences_ids[0] if t < tokenizer.eot]
        if text:
            clock("  [only with word_times=true] word alignment", m.model.align, enc, tokenizer.sot_sequence,
                  [text], size)
    engine = clock("dnsmos load", FastDNSMOS)
    front, back, p808 = engine.split.front.run, engine.split.back.run, engine.p808.run
    engine.split.front.run = lambda *a, **k: clock("dnsmos network before the first pool", front, *a, **k)
    engine.split.back.run = lambda *a, **k: clock("dnsmos network after it, per window", back, *a, **k)
    engine.p808.run = lambda *a, **k: clock("dnsmos P.808, per window", p808, *a, **k)
    windows = 0
    start = time.perf_counter()
    for audio in audios:
        windows += engine(audio)["windows"]
    parts["dnsmos total"] = time.perf_counter() - start
    peer = clock("peer whisper load", whisper.load_model, str(_bundled_openai_checkpoint()), "cpu")
    for audio in audios:
        mel = whisper.log_mel_spectrogram(audio, peer.dims.n_mels, padding=whisper.audio.N_SAMPLES)
        segment = whisper.pad_or_trim(mel, whisper.audio.N_FRAMES)[None]
        clock("peer encoder (30 s window)", peer.embed_audio, segment)
        clock("peer transcribe (all of it)", peer.transcribe, audio, fp16=False)
    lines = [f"where the time goes, {len(audios)} replies, {minutes:.2f} audio minutes, {windows} DNSMOS windows "
             "(wall seconds per audio minute; one configuration at a time, in one process, on all cores; "
             "[bracketed] parts are not in a default score):"]
    for name, seconds in parts.items():
        lines.append(f"  {name:<50} {seconds / minutes:8.2f}")
    return lines


def _front_flop_per_frame(path: Path) -> float:
    """FLOP per 10 ms frame of DNSMOS' primary network before its first pool (its 3x3
    convolutions over 161 STFT bins; the STFT itself is under 1 % and left out)."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    flop = 0.0
    for node in model.graph.node:
        if node.op_type == "MaxPool":
            break
        weights = [inits[i] for i in node.input if i in inits and len(inits[i].dims) == 4]
        if node.op_type == "Conv" and weights:
            out_ch, in_ch, kh, kw = weights[0].dims
            flop += 2.0 * out_ch * in_ch * kh * kw * 161
    return flop


def _time_one_thread(fn: Any, *args: Any, repeat: int = 3) -> float:
    fn(*args)  # warm
    start = time.perf_counter()
    for _ in range(repeat):
        fn(*args)
    return (time.perf_counter() - start) / repeat


def _encoder_seconds() -> tuple[float, float]:
    """One 30 s window through Whisper tiny.en's encoder on one thread: float32 (ivbench's) and
    int8 (onnxruntime's dynamic quantisation of the same graph; not used by ivbench)."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ivbench.asr.checkpoint import openai_state
    from ivbench.asr.onnx_encoder import encoder_model
    from ivbench.asr.whisper import _bundled_model_dir

    dims, state = openai_state(_bundled_model_dir())
    mel = np.random.default_rng(0).standard_normal((1, dims["n_mels"], 3000)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        fp32.write_bytes(encoder_model(dims, state))
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         extra_options={"DefaultTensorType": 1})
        sessions = [ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"]) for f in (fp32, int8)]
        fp32_s, int8_s = (_time_one_thread(s.run, None, {"mel": mel}) for s in sessions)
    return fp32_s, int8_s


def floor(run: Path, peer_s_per_min: float) -> list[str]:
    """The least wall time per audio minute ivbench could take on this machine at per-reply
    fidelity, from what cannot be shared: DNSMOS as speechmos defines it (measured: the whole
    corpus, one clip per core) and one Whisper window per reply (measured on one thread, counted
    as if the cores shared it perfectly), against the peer's time from the same invocation."""
    from concurrent.futures import ThreadPoolExecutor

    import soundfile
    import soxr

    from ivbench.metrics.mos._dnsmos_engine import FastDNSMOS

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    audios = [_read_16k(r["wav"], soundfile, soxr) for r in _replies(run)]
    minutes = sum(len(a) for a in audios) / 16000 / 60
    engine = FastDNSMOS(threads=1)
    frames = 0
    front = engine.split.front.run

    def counted(names: Any, feeds: dict[str, np.ndarray]) -> Any:
        nonlocal frames
        frames += int(np.prod(next(iter(feeds.values())).shape[:2]))
        return front(names, feeds)

    def counted_whole(names: Any, feeds: dict[str, np.ndarray]) -> Any:  # a clip of one window
        nonlocal frames
        frames += engine.split.window_frames * len(next(iter(feeds.values())))
        return whole(names, feeds)

    whole = engine.full.run
    engine.split.front.run, engine.full.run = counted, counted_whole  # type: ignore[method-assign]
    start = time.perf_counter()
    windows = sum(engine(a)["windows"] for a in audios)
    dnsmos_one = time.perf_counter() - start
    engine.split.front.run, engine.full.run = front, whole  # type: ignore[method-assign]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cores) as pool:
        list(pool.map(engine, audios))
    dnsmos_all = (time.perf_counter() - start) / minutes
    big = np.random.default_rng(0).standard_normal(16000 * 11).astype(np.float32) * 0.1
    from ivbench.metrics.mos._dnsmos_engine import _frames

    x = _frames(big, 0, 1000)[None]
    gflops = _front_flop_per_frame(engine.primary_path) * 1000 / _time_one_thread(
        front, None, {engine.split.front_input: x}) / 1e9
    front_floor = frames * _front_flop_per_frame(engine.primary_path) / (gflops * 1e9) / minutes / cores
    fp32_s, int8_s = _encoder_seconds()
    per_min = len(audios) / minutes
    target = peer_s_per_min / 4
    lines = [f"the floor on this machine ({cores} cores), per audio minute; 4x the peer ({peer_s_per_min:.2f} s/min "
             f"in this invocation) needs {target:.2f} s/min:",
             f"  DNSMOS, whole corpus, one thread: {dnsmos_one / minutes:.2f} s; one clip per core: {dnsmos_all:.2f} s "
             f"({windows} windows, {frames} network-front frames for {minutes * 6000:.0f} frames of audio)",
             f"  DNSMOS front alone at the measured {gflops:.0f} GFLOP/s a core, all cores busy: {front_floor:.2f} s",
             f"  Whisper encoder, one 30 s window per reply ({per_min:.2f} replies a minute), one thread: "
             f"float32 {fp32_s:.3f} s, int8 {int8_s:.3f} s a window -> "
             f"{fp32_s * per_min / cores:.2f} / {int8_s * per_min / cores:.2f} s with the cores shared perfectly"]
    for name, enc in (("float32", fp32_s), ("int8", int8_s)):
        least = dnsmos_all + enc * per_min / cores
        lines.append(f"  DNSMOS (one clip per core) + {name} encoder, before any decoding: {least:.2f} s/min "
                     f"-> at most {peer_s_per_min / least:.2f}x the peer")
    return lines


# -- the report -------------------------------------------------------------------------

def _wer(files: list[dict[str, Any]]) -> tuple[float, float]:
    errors = sum(f["errors"] for f in files)
    words = sum(f["ref_words"] for f in files)
    per = [f["errors"] / f["ref_words"] for f in files if f["ref_words"]]
    return errors / max(words, 1), statistics.fmean(per) if per else float("nan")


def _per_file(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[tuple[float, str, float, float]]:
    out = []
    for x, y in zip(a, b):
        assert x["id"] == y["id"]
        wa, wb = x["errors"] / max(x["ref_words"], 1), y["errors"] / max(y["ref_words"], 1)
        out.append((abs(wa - wb), x["id"], wa, wb))
    return out


def _timing_lines(minutes: float, peer: dict[str, Any], ivb: dict[str, Any],
                  timings: dict[str, list[float]]) -> list[str]:
    best = {k: min(v) for k, v in timings.items()}
    lines = [f"wall time per audio minute (best of {len(timings['peer'])} interleaved runs; all runs: "
             + "; ".join(f"{k} {', '.join(f'{x:.1f}' for x in v)} s" for k, v in timings.items()) + ")",
             f"  peer    {best['peer'] / minutes:7.2f} s/min",
             f"  ivbench {best['ivbench'] / minutes:7.2f} s/min   ratio {best['peer'] / best['ivbench']:.2f}x",
             "per stage, s per audio minute (from the last run of each):"]
    ps, ist = peer["stages"], ivb["stages"]
    stage_rows = [("ASR (peer: transcribe loop; ivbench: transcript + asr_wer)", ps["asr"],
                   ist.get("transcript", 0) + ist.get("asr_wer", 0)),
                  ("DNSMOS", ps["dnsmos"], ist.get("dnsmos", 0)),
                  ("rest (interpreter, imports, loads, reading)", ps["imports+load"] + ps["read"], ist["rest"])]
    for name, p, i in stage_rows:
        ratio = p / max(i, 1e-9)
        lines.append(f"  {name:<62} peer {p / minutes:6.2f}  ivbench {i / minutes:6.2f}  ratio {ratio:5.2f}x")
    return lines


def _fidelity_lines(corpus: list[dict[str, Any]], peer: dict[str, Any], ivb: dict[str, Any]) -> list[str]:
    meta = {e["id"]: e for e in corpus}
    lines = ["WER per condition: corpus (sum errors / sum words) and mean per reply"]
    for condition in CONDITIONS + ("all",):
        ids = {e["id"] for e in corpus if condition in ("all", e["condition"])}
        pw, iw = (_wer([f for f in x["files"] if f["id"] in ids]) for x in (peer, ivb))
        lines.append(f"  {condition:<9} peer {pw[0]:.4f} / {pw[1]:.4f}   ivbench {iw[0]:.4f} / {iw[1]:.4f}")
    diffs = _per_file(peer["files"], ivb["files"])
    mean_diff = statistics.fmean(d for d, *_ in diffs) * 100
    lines.append(f"per-reply |WER difference| peer vs ivbench: mean {mean_diff:.2f} points, max "
                 f"{max(d for d, *_ in diffs) * 100:.1f}, identical on {sum(d == 0 for d, *_ in diffs)}/{len(diffs)}; "
                 "worst:")
    text = {f["id"]: f["transcript"] for f in ivb["files"]}
    ptext = {f["id"]: f["transcript"] for f in peer["files"]}
    for d, rid, wp, wi in sorted(diffs, reverse=True)[:5]:
        if d == 0:
            break
        lines.append(f"  {rid} ({meta[rid]['voice']}): peer {wp:.3f} ivbench {wi:.3f}")
        lines.append(f"     peer:    {ptext[rid].strip()[:150]}")
        lines.append(f"     ivbench: {text[rid].strip()[:150]}")
    worst = max(abs(f["dnsmos"][k] - g["dnsmos"][k]) for f, g in zip(peer["files"], ivb["files"])
                for k in ("sig", "bak", "ovrl", "p808"))
    lines.append(f"DNSMOS largest |difference| peer vs ivbench over sig/bak/ovrl/p808: {worst:.2e}")
    return lines


def report(corpus: list[dict[str, Any]], peer: dict[str, Any], ivb: dict[str, Any],
           timings: dict[str, list[float]], packed: dict[str, Any] | None, note: str) -> list[str]:
    minutes = sum(e["duration_s"] for e in corpus) / 60
    lines = [note, f"corpus: {len(corpus)} replies ({', '.join(VOICES)}; {', '.join(CONDITIONS)}), "
                   f"{minutes:.2f} audio minutes, {statistics.fmean(e['duration_s'] for e in corpus):.1f} s mean"]
    lines += _timing_lines(minutes, peer, ivb, timings)
    lines += _fidelity_lines(corpus, peer, ivb)
    if packed is not None:
        pd_ = _per_file(ivb["files"], packed["files"])
        lines.append(f"opt-in transcript:pack=true against ivbench's default (one reply per window): per-reply "
                     f"|WER difference| mean {statistics.fmean(d for d, *_ in pd_) * 100:.2f} points, max "
                     f"{max(d for d, *_ in pd_) * 100:.1f}, {sum(d > 0 for d, *_ in pd_)}/{len(pd_)} replies differ; "
                     f"corpus WER {_wer(packed['files'])[0]:.4f} vs {_wer(ivb['files'])[0]:.4f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=40, help="replies per condition (default 40: 120 replies)")
    parser.add_argument("--quick", action="store_true", help="4 replies per condition: a dry run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (peer, ivbench) (default 2)")
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy (not a measurement)")
    parser.add_argument("--pack", action="store_true", help="also score with transcript:pack=true")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also time the parts on N replies")
    parser.add_argument("--floor", action="store_true",
                        help="also measure the least time per audio minute ivbench could take at per-reply fidelity")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "ivbench-scoring-bench")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--child", choices=["peer", "ivbench"], help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--metrics", default="asr_wer,dnsmos", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "peer":
        return child_peer(args.run, args.child_out)
    if args.child == "ivbench":
        return child_ivbench(args.run, args.child_out, args.metrics)

    n = 4 if args.quick else args.texts
    load = os.getloadavg()[0]
    valid = load <= 1.0 and not args.quick
    if load > 1.0 and not args.force:
        sys.exit(f"1-minute load average {load:.2f} > 1: the machine is busy and the ratios would mean nothing. "
                 "Wait for an idle machine, or give --force for a dry run that is not a measurement.")
    note = (f"date {time.strftime('%Y-%m-%d %H:%M')}; load average before: {os.getloadavg()}; "
            f"{os.cpu_count()} CPUs; " + ("a measurement" if valid else
                                            "DRY RUN (--quick or machine busy): NOT A VALID MEASUREMENT"))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    print(f"building the corpus ({n} texts x {len(CONDITIONS)} conditions) in {work} …", file=sys.stderr)
    corpus = build_corpus(work, n)
    run = make_run(work, corpus, n)
    timings: dict[str, list[float]] = {"peer": [], "ivbench": []}
    peer = ivb = packed = None
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: peer …", file=sys.stderr)
        seconds, peer = _child("peer", run, work, n)
        timings["peer"].append(seconds)
        print(f"round {r + 1}/{args.rounds}: ivbench …", file=sys.stderr)
        seconds, ivb = _child("ivbench", run, work, n)
        timings["ivbench"].append(seconds)
    if args.pack:
        print("ivbench with transcript:pack=true …", file=sys.stderr)
        _, packed = _child("ivbench", run, work, n, "transcript:pack=true;asr_wer;dnsmos")
    assert peer is not None and ivb is not None
    lines = report(corpus, peer, ivb, timings, packed, note)
    if args.profile:
        lines += profile(run, args.profile)
    if args.floor:
        lines += floor(run, min(timings["peer"]) / (sum(e["duration_s"] for e in corpus) / 60))
    lines.append(f"load average after: {os.getloadavg()}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
