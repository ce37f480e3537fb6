"""Streamed vocoding against whole-utterance vocoding: how much each look-ahead and left context
lose (SNR), and what a larger look-ahead costs in latency.

GroupFormer vocodes its reply as it is generated (`StreamingVocoder`): after each group of G
units it synthesises the units that have `lookahead` units after them, re-using `context`
units of left context, and cross-fades the seam. A unit's samples depend on the units around
it as far as the vocoder's receptive field (24 units each way for the TWIST 25 Hz shape);
past the look-ahead and the context, the chunk differs from the whole utterance. Measured:

    SNR = 10 log10( Σ (whole − mean)² / Σ (streamed − whole)² )   over the whole reply, in dB

for every look-ahead × context of the grid, on random unit sequences, with G=5 and a chunk
every group (the most seams). The vocoder is the TWIST 25 Hz LJ shape (upsampling 5·4·4·4·2,
resblock kernels 3, 7, 11, dilations 1, 3, 5) with `signal_vocoder` weights: random, scaled
so that every layer keeps the signal's variance (the output varies about an offset, which
the SNR leaves out) — every tap counts, so distant units matter as much as the architecture allows
(torch's default initialisation shrinks the signal to a near-constant whose SNR means
nothing). Two widths: 32 channels (as the test), and the full 512 (`--full`, slower) whose
numbers are compared in the results. `--vocoder PATH
--vocoder-config PATH` measures a released vocoder instead.

Latency of a look-ahead L (units of 40 ms at 25 Hz): the audio trails the generated units by
L × 40 ms; the first packet waits for the first group whose units exceed L (one more LLM
step per G units of look-ahead past the first group: `--group-ms`, by default 58 ms, the
qwen2-7b G=5 step on an H100 in groupformer_h100_2026-11-26.txt); and every chunk vocodes
context + G + L units (CPU time per call measured here on the full-width vocoder).

    python benchmarks/vocoder_streaming.py [--full] [--seeds 3] [--units 100]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

G = 5
UNIT_MS = 40.0


def stream(vocoder: Any, units: list[int], lookahead: int, context: int, fade: int = 320,
           chunk_groups: int = 1) -> tuple[np.ndarray, int, list[float]]:
    """The streamed reply, the groups pushed before its first packet, and each call's seconds."""
    from ivbench.models.groupformer.vocoder import StreamingVocoder

    s = StreamingVocoder(vocoder, chunk_groups, lookahead, context, fade)
    calls: list[float] = []
    chunks, first = [], 0
    for start in range(0, len(units), G):
        t0 = time.perf_counter()
        chunk = s.push(units[start:start + G])
        if chunk is not None:
            calls.append(time.perf_counter() - t0)
            chunks.append(chunk)
            first = first or start // G + 1
    last = s.flush()
    chunks += [last] if last is not None else []
    return np.concatenate(chunks), first, calls


def snr_db(streamed: np.ndarray, whole: np.ndarray) -> float:
    """The whole utterance's power (about its mean: a constant offset is no signal) over the error's."""
    whole = whole.astype(np.float64)
    error = float(np.sum((streamed.astype(np.float64) - whole) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(float(np.sum((whole - whole.mean()) ** 2)) / error)


def measure(vocoders: list[Any], utterances: list[list[int]], lookaheads: list[int],
            contexts: list[int]) -> dict[tuple[int, int], list[float]]:
    wholes = [[v.synthesize(u).numpy() for u in utterances] for v in vocoders]
    out = {}
    for la in lookaheads:
        for ctx in contexts:
            out[(la, ctx)] = [snr_db(stream(v, u, la, ctx)[0], whole[i])
                              for v, whole in zip(vocoders, wholes) for i, u in enumerate(utterances)]
    return out


def timing(vocoder: Any, units: list[int], la: int, ctx: int, repeats: int = 3) -> tuple[int, float, float]:
    """(groups before the first packet, first call ms, median steady-state call ms)."""
    firsts, steady = [], []
    for _ in range(repeats):
        _, first, calls = stream(vocoder, units, la, ctx)
        firsts.append(calls[0])
        steady.extend(calls[2:])
    return first, 1000 * statistics.median(firsts), 1000 * statistics.median(steady)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lookaheads", default="0,1,2,4,6,8,10,12")
    parser.add_argument("--contexts", default="4,8,16,32")
    parser.add_argument("--seeds", type=int, default=3, help="random vocoders per width")
    parser.add_argument("--units", type=int, default=100, help="units per utterance (25 per second)")
    parser.add_argument("--full", action="store_true", help="also the full 512-channel width (slower)")
    parser.add_argument("--vocoder", help="a released vocoder checkpoint instead of random weights")
    parser.add_argument("--vocoder-config", help="its config JSON")
    parser.add_argument("--group-ms", type=float, default=58.0, help="one LLM + GroupModel step, for the latency")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def vocoder_sets(args: argparse.Namespace) -> dict[str, list[Any]]:
    from ivbench.models.groupformer.config import VOCODER_25HZ
    from ivbench.models.groupformer.vocoder import load_vocoder, signal_vocoder

    if args.vocoder:
        return {"released": [load_vocoder(args.vocoder, args.vocoder_config)]}
    narrow = dict(VOCODER_25HZ, upsample_initial_channel=32)
    sets = {"32 ch": [signal_vocoder(narrow, s) for s in range(args.seeds)]}
    if args.full:
        sets["512 ch"] = [signal_vocoder(VOCODER_25HZ, s) for s in range(max(1, args.seeds // 2))]
    return sets


def print_table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    lookaheads = [int(x) for x in args.lookaheads.split(",")]
    contexts = [int(x) for x in args.contexts.split(",")]
    rng = np.random.default_rng(0)
    utterances = [rng.integers(0, 500, args.units).tolist() for _ in range(2)]
    sets = vocoder_sets(args)
    print(f"torch {torch.__version__}; {args.threads} CPU thread(s); load {os.getloadavg()[0]:.2f}; "
          f"G={G}, a chunk every group, fade 320 samples; {len(utterances)} utterances of {args.units} random units")
    print("vocoders: " + "; ".join(f"{name}: {len(vs)} × receptive field {vs[0].receptive_field()} units"
                                   for name, vs in sets.items()))
    results = {name: measure(vs, utterances, lookaheads, contexts) for name, vs in sets.items()}
    timed_name = "512 ch" if "512 ch" in sets else next(iter(sets))
    timed = sets[timed_name][0]
    base_first, base_first_ms, _ = timing(timed, utterances[0], 2, 8)
    head = ["look-ahead", "context"] + [f"SNR {n} min/mean dB" for n in sets] + [
        "audio delay ms", "1st pkt after groups", "1st call ms", "chunk call ms", "extra 1st pkt ms"]
    rows = []
    for la in lookaheads:
        for ctx in contexts:
            first, first_ms, chunk_ms = timing(timed, utterances[0], la, ctx)
            extra = (first - base_first) * args.group_ms + first_ms - base_first_ms
            snrs = [f"{min(r[(la, ctx)]):6.1f} / {statistics.mean(r[(la, ctx)]):6.1f}" for r in results.values()]
            rows.append([str(la), str(ctx)] + snrs + [f"{la * UNIT_MS:.0f}", str(first), f"{first_ms:.1f}",
                                                       f"{chunk_ms:.1f}", f"{extra:+.0f}"])
    print_table(head, rows)
    print(f"call times: the {timed_name} vocoder on this CPU; extra 1st pkt: against look-ahead 2, context 8, "
          f"with {args.group_ms:.0f} ms per group; load at the end {os.getloadavg()[0]:.2f}")
    for name, r in results.items():
        ok = [key for key in sorted(r) if min(r[key]) >= 40]
        print(f"{name}: smallest look-ahead (then context) with every SNR ≥ 40 dB: "
              f"{'none in the grid' if not ok else f'look-ahead {ok[0][0]}, context {ok[0][1]}'}")


if __name__ == "__main__":
    main()
