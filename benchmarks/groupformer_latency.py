"""GroupFormer first-packet latency and groups per second, direct against text-first.

    python benchmarks/groupformer_latency.py                    # tiny on the CPU; + qwen2-7b on a GPU
    python benchmarks/groupformer_latency.py --size qwen2-7b --device cuda --groups 5
    python benchmarks/groupformer_latency.py --engines dynamic,static,graphs   # the engines on the CPU

IntrinsicVoice's claim: generating speech groups directly (no text first) puts the first
packet under 100 ms, a tenth of a SpeechGPT-style model that writes its whole text reply
before its speech. Each configuration is the `groupformer` system with random weights in a
named backbone shape (`init=random`), and `groupformer-text-first` with the same weights,
answering a spoken user turn (s2s). Reply lengths are fixed (random weights never end a reply
reliably): `--speech-seconds` of speech, and `--text-tokens` of text before it in the chain.
Each user turn is a few samples shorter than the one before: no two user turns of an
evaluation have the same length, so the speech tokenizer's convolutions meet a new input
shape every turn here too (the units, and so the prefill, stay the same length).

The clock is the runner's (`ivbench.runner.clock.time_turn`): t0 is the user turn handed to
`respond()`, so the first packet includes the speech tokenizer (HuBERT + k-means), the
prefill, the first group(s) and vocoding the first chunk to a CPU array. Groups per second
count only the LLM + GroupModel steps of the speech part (vocoding excluded); ×RT is the
audio seconds they produce per second.

Each configuration runs with every KV engine of `--engines` (engines.py): `dynamic` decodes
op by op; `graphs` keeps the KV cache in fixed buffers and, on CUDA, replays decoding steps,
bucketed prefills, the GroupModel and the vocoder's chunk lengths as CUDA graphs (checked
against `dynamic` at load; the difference is printed). On a GPU both run by default, so the
speed-up is measured in one run on one card.

Goals (GPU, qwen2-7b shape, bf16): direct G=5 first packet ≤ 60 ms on an H100; text-first at
least 10× slower to its first packet.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time
import traceback
from typing import Any, Optional

import numpy as np

from ivbench.runner.clock import time_turn
from ivbench.systems.groupformer import GroupFormerSystem, GroupFormerTextFirst
from ivbench.types import Audio, AudioChunk, Mode, StageMark, TextDelta, TurnInput

UNITS_PER_S = 25


def lookahead(args: argparse.Namespace) -> int:
    from ivbench.models.groupformer.config import STREAM_LOOKAHEAD

    return STREAM_LOOKAHEAD if args.lookahead is None else args.lookahead


def user_turn(seconds: float, shorter_by: int = 0) -> TurnInput:
    """A deterministic speech-like user turn at 16 kHz: harmonics with a moving pitch, plus noise;
    `shorter_by` samples cut off its end."""
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds) - shorter_by) / 16000
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    samples = (0.1 * voice + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    return TurnInput(mode=Mode.S2S, text="(spoken)", audio=Audio(samples, 16000), dialogue_id="bench")


def measure(system: GroupFormerSystem, turns: list[TurnInput], warmup: int) -> dict[str, Any]:
    """First-packet and first-text latency (ms) and speech-part throughput, a fresh session per
    turn; the first `warmup` turns are not counted."""
    first_audio, first_text, rates, tokens_rates, prefill = [], [], [], [], []
    stages: dict[str, list[float]] = {"speech_tokenized": [], "prefill": [], "first_group": []}
    for i, turn in enumerate(turns):
        session = system.new_session()
        timing = time_turn(session, turn, timeout_s=600)
        if timing.error:
            raise RuntimeError(timing.error["traceback"] or timing.error["message"])
        if i < warmup:
            continue
        audio = [ns for ns, e in timing.events if isinstance(e, AudioChunk) and len(e.samples)]
        text = [ns for ns, e in timing.events if isinstance(e, TextDelta) and e.text]
        first_audio.append(audio[0] / 1e6)
        for ns, e in timing.events:
            if isinstance(e, StageMark) and e.name in stages and len(stages[e.name]) < len(first_audio):
                stages[e.name].append(ns / 1e6)
        if text:
            first_text.append(text[0] / 1e6)
        stats = session.last_stats
        rates.append(stats["groups"] / max(stats["speech_generate_s"], 1e-9))
        if stats.get("text_tokens"):
            tokens_rates.append(stats["text_tokens"] / max(stats["text_generate_s"], 1e-9))
        prefill.append(stats["prefill_tokens"])
        session.close()
    return {"first_audio_ms": statistics.median(first_audio),
            "first_audio_p95_ms": float(np.percentile(first_audio, 95)),
            "first_text_ms": statistics.median(first_text) if first_text else None,
            "groups_per_s": statistics.median(rates),
            "tokens_per_s": statistics.median(tokens_rates) if tokens_rates else None,
            "prefill_positions": int(statistics.median(prefill)),
            "stages_ms": {k: statistics.median(v) for k, v in stages.items() if v}}


def regroup(model: Any, group: int, seed: int = 0) -> Any:
    """The same LLM, speech tokenizer and vocoder with fresh random heads for G = `group`
    (building a 7B LLM once instead of once per G)."""
    import torch

    from ivbench.models.groupformer.config import GroupFormerConfig
    from ivbench.models.groupformer.model import GroupFormer

    config = GroupFormerConfig.from_dict({**model.config.to_dict(), "group_size": group})
    torch.manual_seed(seed + 1)
    fresh = GroupFormer(config, model.llm, model.tokenizer, model.speech_tokenizer, model.vocoder)
    return fresh.place(str(model.device), model.dtype).eval()


def run_config(size: str, device: str, dtype: str, group: int, engine: str, args: argparse.Namespace,
               base: Optional[Any] = None) -> tuple[dict[str, Any], Any]:
    """Direct and text-first (same weights and engine) at group size `group`; returns the row and
    the model."""
    import torch

    groups = math.ceil(args.speech_seconds * UNITS_PER_S / group)
    common = dict(init="random", size=size, group_size=group, device=device, dtype=dtype, seed=0,
                  max_groups=groups, min_groups=groups, max_new_tokens=args.text_tokens,
                  min_new_tokens=args.text_tokens, chunk_groups=1, lookahead=lookahead(args),
                  threads=args.threads, engine=engine, max_positions=args.max_positions)
    t0 = time.perf_counter()
    direct = GroupFormerSystem(**common)
    if base is None:
        direct.load(device)
    else:
        if direct.threads and device == "cpu":
            torch.set_num_threads(int(direct.threads))
        direct.attach(regroup(base, group))
    build_s = time.perf_counter() - t0
    chain = GroupFormerTextFirst(**common)
    chain.attach(direct.model, share_with=direct)  # the same weights, engine, tokenizer and vocoder
    turns = [user_turn(args.user_seconds, shorter_by=7 * i) for i in range(args.warmup + args.turns)]
    d = measure(direct, turns, args.warmup)
    c = measure(chain, turns, args.warmup)
    model = direct.model
    info = model.describe()
    row = {"size": size, "device": device, "G": group, "engine": direct.engine.name,
           "engine_check": getattr(direct.engine, "verified_difference", None), "groups": groups,
           "direct": d, "text_first": c,
           "build_s": build_s, "params": info["llm_parameters"], "dtype": info["dtype"],
           "threads": torch.get_num_threads()}
    return row, model


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    head = ("size", "device", "dtype", "engine", "G", "groups", "prefill", "direct 1st pkt ms", "p95",
            "text-first 1st pkt ms", "ratio", "direct groups/s", "×RT", "text tok/s")
    lines = [head]
    for r in rows:
        d, c = r["direct"], r["text_first"]
        lines.append((r["size"], r["device"], r["dtype"], r["engine"], str(r["G"]), str(r["groups"]),
                      str(d["prefill_positions"]),
                      f"{d['first_audio_ms']:.1f}", f"{d['first_audio_p95_ms']:.1f}", f"{c['first_audio_ms']:.1f}",
                      f"{c['first_audio_ms'] / d['first_audio_ms']:.1f}×", f"{d['groups_per_s']:.1f}",
                      f"{d['groups_per_s'] * r['G'] / UNITS_PER_S:.1f}",
                      f"{c['tokens_per_s']:.1f}" if c["tokens_per_s"] else "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for n, line in enumerate(lines):
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_breakdown(rows: list[dict[str, Any]]) -> None:
    """Where the direct first packet's time goes (p50 ms since the turn was handed over)."""
    print("direct first packet, p50 ms since t0: units ready (HuBERT + k-means) | prefill done | "
          "first group | first packet")
    for r in rows:
        st = r["direct"]["stages_ms"]
        print(f"  {r['engine']:>12} G={r['G']:<3} {st.get('speech_tokenized', float('nan')):7.1f} | "
              f"{st.get('prefill', float('nan')):7.1f} | "
              f"{st.get('first_group', float('nan')):7.1f} | {r['direct']['first_audio_ms']:7.1f}")


def goals(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if not r["device"].startswith("cuda") or r["size"] != "qwen2-7b":
            continue
        d, c = r["direct"], r["text_first"]
        ratio = c["first_audio_ms"] / d["first_audio_ms"]
        if r["G"] == 5:
            out.append(f"[{r['engine']}] goal direct G=5 first packet ≤ 60 ms: {d['first_audio_ms']:.1f} ms "
                       f"({'met' if d['first_audio_ms'] <= 60 else 'NOT met'})")
        out.append(f"[{r['engine']}] goal text-first ≥ 10× slower (G={r['G']}): {ratio:.1f}× "
                   f"({'met' if ratio >= 10 else 'NOT met'})")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", action="append", help="tiny, qwen2-0.5b, qwen2-7b (repeatable); "
                        "default: tiny on the CPU, and qwen2-7b on the GPU when there is one")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--groups", default="1,2,5,10", help="group sizes G, comma-separated")
    parser.add_argument("--turns", type=int, default=5, help="measured turns per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--user-seconds", type=float, default=3.0, help="length of the spoken user turn")
    parser.add_argument("--speech-seconds", type=float, default=4.0, help="length of each spoken reply")
    parser.add_argument("--text-tokens", type=int, default=64, help="text tokens the text-first chain writes")
    parser.add_argument("--lookahead", type=int, default=None,
                        help="vocoder look-ahead in units (default: the system's)")
    parser.add_argument("--engines", default=None,
                        help="KV engines to compare, comma-separated (dynamic, static, graphs; see "
                             "ivbench/models/groupformer/engines.py); default: dynamic,graphs on a GPU, dynamic "
                             "on the CPU")
    parser.add_argument("--max-positions", type=int, default=8192,
                        help="static engines' KV buffer length (the system's default)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; tiny: 1)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    args = parser.parse_args(argv)

    import torch
    import transformers

    has_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not has_cuda:
        parser.error("--device cuda: torch sees no CUDA GPU")
    plan: list[tuple[str, str]] = []
    if args.size:
        device = "cuda" if args.device == "cuda" or (args.device == "auto" and has_cuda) else "cpu"
        plan = [(s, device) for s in args.size]
    else:
        if args.device in ("auto", "cpu"):
            plan.append(("tiny", "cpu"))
        if args.device in ("auto", "cuda") and has_cuda:
            plan.append(("qwen2-7b", "cuda"))
    group_sizes = [int(g) for g in args.groups.split(",")]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"user turn {args.user_seconds:g} s of speech; replies {args.speech_seconds:g} s of speech; "
          f"text-first writes {args.text_tokens} text tokens first; vocoder look-ahead {lookahead(args)} units; "
          f"{args.turns} turns after {args.warmup} warm-up, p50 unless noted")
    rows = []
    for size, device in plan:
        print(f"\n{size} on {device_name(device)}, {os.cpu_count()} CPU cores "
              "(random weights: untrained — latency only)")
        size_rows = []
        base = None
        engines = (args.engines or ("dynamic,graphs" if device == "cuda" else "dynamic")).split(",")
        for engine in engines:
            for g in group_sizes:
                try:
                    row, base = run_config(size, device, args.dtype, g, engine, args, base)
                except Exception:  # noqa: BLE001 - the other engines' figures are still worth having
                    print(f"engine {engine}, G={g} failed:\n{traceback.format_exc()}", flush=True)
                    break
                size_rows.append(row)
                # One line per configuration as it ends: a run cut short still leaves its figures.
                check = "" if row["engine_check"] is None else f", checked against dynamic: {row['engine_check']:.2g}"
                d, c = row["direct"], row["text_first"]
                print(f"  {row['engine']} G={g}: direct first packet {d['first_audio_ms']:.1f} ms "
                      f"(p95 {d['first_audio_p95_ms']:.1f}), text-first {c['first_audio_ms']:.1f} ms, "
                      f"{d['groups_per_s']:.1f} groups/s; built in {row['build_s']:.1f} s, "
                      f"{row['params'] / 1e6:.1f} M LLM parameters{check}", flush=True)
                gc.collect()
        del base
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        print_table(size_rows, args)
        print_breakdown(size_rows)
        if device == "cpu":
            print(f"(torch CPU threads: {size_rows[-1]['threads']})")
        rows.extend(size_rows)
    for line in goals(rows):
        print(line)
    if args.json:
        import json

        cards = {device_name(d) for _, d in plan}
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "devices": sorted(cards), "args": vars(args)}, f, indent=2)
    if not has_cuda:
        print("\nno CUDA GPU visible: the qwen2-7b GPU measurement did not run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
