"""Speech tokenizer (HuBERT + k-means) latency: the user turn's units are the first thing a
speech-to-speech turn computes, so they sit wholly inside the first packet.

An mHuBERT-25Hz-shaped HuBERT (base: 12 layers, 768 wide, 8 conv layers; random weights,
which time like the real ones) and 500 random centroids, layer 11, float32, tokenised three
ways on the same model:

- whole model: `HubertModel(…, output_hidden_states=True).hidden_states[11]` — all 12 layers;
- layers ≤ 11: `SpeechTokenizer.encode`, which stops at the quantised layer;
- graphed: `GraphedSpeechTokenizer` — the whole tokenizer on buffers padded to a frame bucket
  (the padding masked), one CUDA graph per bucket on a GPU (on the CPU the same code runs
  uncaptured, and the padding only costs);
- graphed, new lengths: the same with every turn a few samples shorter than the last, as in
  an evaluation, where no two user turns are alike (op by op, every new length is a new input
  shape for the convolutions; a bucket's graph does not care).

Time per turn from samples in to unit ids on the host (p50 and p95 of --repeats), and each
way's p50 as a ratio to the whole model's, measured in one run.

    python benchmarks/speech_tokenizer_latency.py [--device auto|cpu|cuda] [--seconds 2,5,10]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from collections.abc import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(way: Callable[[np.ndarray], object], turns: list[np.ndarray], warmup: int) -> list[float]:
    for samples in turns[:warmup]:
        way(samples)
    times = []
    for samples in turns[warmup:]:
        t0 = time.perf_counter()
        way(samples)  # ends with the units on the host: the GPU's work is finished
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seconds", default="2,5,10", help="user turn lengths, comma-separated")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    import torch
    from transformers import HubertConfig, HubertModel

    from ivbench.models.groupformer.config import HUBERT_25HZ_CONV
    from ivbench.models.groupformer.speech_tokenizer import GraphedSpeechTokenizer, SpeechTokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hubert = HubertModel(HubertConfig(**HUBERT_25HZ_CONV)).eval()
    layer = 11
    centroids = np.random.default_rng(0).standard_normal((500, hubert.config.hidden_size)).astype(np.float32)
    tokenizer = SpeechTokenizer(hubert, centroids, layer).to(device)
    graphed = GraphedSpeechTokenizer(tokenizer).prepare()
    card = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}; {card}; graphs {'captured' if graphed.capture else 'uncaptured'}; "
          f"HuBERT {hubert.config.num_hidden_layers} layers × {hubert.config.hidden_size}, layer {layer}, "
          f"{hubert.config._attn_implementation} attention; {args.repeats} turns after {args.warmup} warm-up")

    @torch.inference_mode()
    def whole_model(samples: np.ndarray) -> list[int]:
        x = torch.from_numpy(samples)[None].to(device)
        features = hubert(x, output_hidden_states=True).hidden_states[layer][0]
        return tokenizer.nearest_units(features).tolist()

    ways = {"whole model": whole_model,
            f"layers ≤ {layer}": lambda s: tokenizer.encode(s).tolist(),
            "graphed": lambda s: graphed.encode(s).tolist()}
    header = f"{'turn s':>6}  {'frames':>6}  {'way':<21}  {'p50 ms':>7}  {'p95 ms':>7}  {'× whole':>7}  units equal"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(1)
    count = args.warmup + args.repeats
    for seconds in (float(s) for s in args.seconds.split(",")):
        samples = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        reference = whole_model(samples)
        runs = [(name, way, [samples] * count) for name, way in ways.items()]
        # 7 samples shorter each turn: a new conv input shape every time, frames about the same
        runs.append(("graphed, new lengths", ways["graphed"], [samples[: len(samples) - 7 * i] for i in range(count)]))
        base = None
        for name, way, turns in runs:
            times = np.array(timed(way, turns, args.warmup)) * 1000
            p50, p95 = np.percentile(times, 50), np.percentile(times, 95)
            base = base or p50
            print(f"{seconds:>6g}  {len(reference):>6}  {name:<21}  {p50:>7.1f}  {p95:>7.1f}  "
                  f"{p50 / base:>6.2f}×  {way(turns[-1]) == whole_model(turns[-1])}")


if __name__ == "__main__":
    main()
