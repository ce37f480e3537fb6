"""First-packet latency of the default cascade against Θ, with the stage breakdown.

    python benchmarks/cascade_latency.py                  # demo task, Θ ∈ {1, 3, 9, whole}
    python benchmarks/cascade_latency.py --limit 3 --thetas 1,3 --wer --json out.json

Every user turn of the task is spoken by the Piper voice beforehand (not timed) and answered
in mode s2s by `cascade` systems that differ only in Θ; they share one loaded LLM, and
decoding is greedy, so every Θ speaks the same reply text and only the chunking differs.
Each turn is timed by the runner's own clock (`ivbench.runner.clock.time_turn`: t0 is the
user turn handed to respond(), events stamped as they are yielded); for each dialogue the
Θ values take turns, so a change in machine load spreads over all of them. One warm-up turn
per Θ is run first and left out.

Columns (ms from t0, mean over turns unless marked): first packet p50/p95/mean; the stage
marks asr_done, llm_first_token, tts_first_input (first text chunk handed to the voice),
tts_first_chunk (its first audio); llm_done; end of reply; RTF; with --wer, the corpus WER of
each reply's speech, transcribed by the cascade's own Whisper, against its own text.

Measured on the 2-core dev machine (load average 2–4, i.e. nearly only this script), demo
task (10 dialogues, 28 turns per Θ, replies 30 words on average), ms, `--wer`:

| Θ | 1st packet p50 | p95 | mean | asr_done | llm_first_token | tts_first_input | tts_first_chunk | llm_done | end | RTF | speech WER |
|---|---|---|---|---|---|---|---|---|---|---|---|
| 1 | 1180 | 1893 | 1206 | 611 | 1056 | 1129 | 1206 | 5694 | 5761 | 0.41 | 16.9 % |
| 3 | 1378 | 2098 | 1374 | 573 | 1009 | 1218 | 1374 | 4777 | 4876 | 0.45 | 5.6 % |
| 9 | 2024 | 2704 | 1983 | 588 | 1025 | 1638 | 1983 | 4411 | 4616 | 0.50 | 2.3 % |
| whole text | 3909 | 9336 | 4065 | 597 | 1042 | 3619 | 4065 | 3619 | 4598 | 0.53 | 3.6 % |

Smaller Θ speaks sooner but in fragments Whisper hears worse, and on two cores the voice
takes CPU from the LLM (LLM first token → done: 4.6 s at Θ=1, 2.6 s for the whole text).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivbench import registry  # noqa: E402
from ivbench.runner.clock import time_turn  # noqa: E402
from ivbench.types import Audio, AudioChunk, Mode, StageMark, TextDelta, TurnInput  # noqa: E402

STAGE_COLUMNS = ("asr_done", "llm_first_token", "tts_first_input", "tts_first_chunk", "llm_done")


def _theta(text: str) -> Optional[int]:
    return None if text.strip().lower() in ("none", "null", "whole") else int(text)


def _label(theta: Optional[int]) -> str:
    return "whole text" if theta is None else str(theta)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_turn(session: Any, turn: TurnInput, timeout: float) -> dict[str, Any]:
    timing = time_turn(session, turn, timeout)
    heard = session.log[-1].heard if getattr(session, "log", None) else None
    if timing.error:
        return {"error": timing.error["message"], "user_heard": heard}
    stages: dict[str, float] = {}
    first_audio = None
    texts: list[str] = []
    chunks: list[np.ndarray] = []
    rate = 0
    for ns, event in timing.events:
        if isinstance(event, StageMark):
            stages.setdefault(event.name, ns / 1e6)
        elif isinstance(event, AudioChunk) and event.samples.size:
            first_audio = ns / 1e6 if first_audio is None else first_audio
            chunks.append(event.samples)
            rate = event.sample_rate
        elif isinstance(event, TextDelta):
            texts.append(event.text)
    audio = Audio(np.concatenate(chunks), rate) if chunks else None
    end = timing.end_ns / 1e6
    return {"user_heard": heard, "first_audio": first_audio, "end": end, "stages": stages,
            "text": "".join(texts).strip(),
            "audio": audio, "rtf": (end / 1e3) / audio.duration_s if audio else None}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="demo")
    parser.add_argument("--limit", type=int, default=None, help="dialogues (default: all)")
    parser.add_argument("--thetas", default="1,3,9,whole", help="comma-separated; 'whole' = whole text first")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the cascade's own")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another cascade option for every Θ (YAML value), e.g. --set llm_threads=1")
    parser.add_argument("--wer", action="store_true", help="also transcribe each reply's speech")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None, help="write every turn's numbers here")
    args = parser.parse_args(argv)
    thetas = [_theta(t) for t in args.thetas.split(",") if t.strip()]

    from ivbench.asr import word_errors
    from ivbench.systems.cascade import Cascade

    task = registry.create("tasks", registry.parse_spec(args.task))
    dialogues = task.dialogues[: args.limit] if args.limit else task.dialogues
    import yaml

    extra: dict[str, Any] = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: give KEY=VALUE")
        extra[key.strip()] = yaml.safe_load(value)
    cpu = platform.processor() or platform.machine()
    print(f"load average before: {_loadavg()} ({os.cpu_count()} CPUs, {cpu})", flush=True)
    t = time.perf_counter()
    systems = {theta: Cascade(theta=theta, **extra) for theta in thetas}
    for system in systems.values():
        system.load("cpu")  # the LLM weights are loaded once and shared
    print(f"loaded {len(systems)} cascades in {time.perf_counter() - t:.1f} s; options {extra or 'defaults'}",
          flush=True)
    first = next(iter(systems.values()))
    voice, asr = first.voice, first.asr
    spoken = {(d.id, i): voice.speak(turn.text) for d in dialogues for i, turn in enumerate(d.turns)}

    # Warm-up: one turn per Θ, not counted.
    warm = dialogues[0]
    for system in systems.values():
        run_turn(system.new_session(), TurnInput(Mode.S2S, warm.turns[0].text, spoken[(warm.id, 0)]),
                 args.timeout)

    rows: dict[Optional[int], list[dict[str, Any]]] = {theta: [] for theta in thetas}
    started = time.perf_counter()
    for d in dialogues:
        sessions = {theta: s.new_session() for theta, s in systems.items()}
        for i, turn in enumerate(d.turns):
            for theta in thetas:
                out = run_turn(sessions[theta], TurnInput(Mode.S2S, turn.text, spoken[(d.id, i)], d.id, i),
                               args.timeout)
                out.update(dialogue=d.id, turn=i)
                rows[theta].append(out)
        print(f"  {d.id}: done ({time.perf_counter() - started:.0f} s, load {_loadavg()})", flush=True)
    if args.wer:
        for theta in thetas:
            for row in rows[theta]:
                if row.get("audio") is not None:
                    row["heard"] = asr.transcribe(row["audio"]).text
                    row["errors"], row["words"] = word_errors(row["text"], row["heard"])

    def mean(values: list[Optional[float]]) -> float:
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else float("nan")

    header = ["Θ", "turns", "fail", "1st packet p50", "p95", "mean"] + list(STAGE_COLUMNS) + ["end", "RTF"]
    if args.wer:
        header.append("speech WER")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for theta in thetas:
        ok = [r for r in rows[theta] if "error" not in r]
        firsts = [r["first_audio"] for r in ok if r["first_audio"] is not None]
        cells = [_label(theta), str(len(rows[theta])), str(len(rows[theta]) - len(ok)),
                 f"{_pct(firsts, 50):.0f}", f"{_pct(firsts, 95):.0f}", f"{mean(firsts):.0f}"]
        cells += [f"{mean([r['stages'].get(s) for r in ok]):.0f}" for s in STAGE_COLUMNS]
        cells += [f"{mean([r['end'] for r in ok]):.0f}", f"{mean([r['rtf'] for r in ok]):.2f}"]
        if args.wer:
            errors = sum(r.get("errors", 0) for r in ok)
            words = sum(r.get("words", 0) for r in ok)
            cells.append(f"{100 * errors / max(words, 1):.1f} %")
        lines.append("| " + " | ".join(cells) + " |")
    print()
    print("\n".join(lines))
    ok = [r for theta in thetas for r in rows[theta] if "error" not in r]
    tokens_note = f"mean reply: {mean([len(r['text'].split()) for r in ok]):.1f} words"
    print(f"\n{len(dialogues)} dialogues, {sum(len(d.turns) for d in dialogues)} user turns per Θ; "
          f"{tokens_note}; load average after: {_loadavg()}")
    for theta in thetas:
        for r in rows[theta]:
            if "error" in r:
                print(f"  Θ={_label(theta)} {r['dialogue']} turn {r['turn']} failed: {r['error']}")
    if args.json:
        data = {_label(theta): [{k: v for k, v in r.items() if k != "audio"} for r in rows[theta]]
                for theta in thetas}
        args.json.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
