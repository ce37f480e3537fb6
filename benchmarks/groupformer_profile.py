"""Where a GroupFormer turn's time goes: the raw LLM decode step against GroupFormer's own
speech step, and the top operators of one direct (s2s) turn under torch.profiler.

    python benchmarks/groupformer_profile.py --size qwen2-7b --device cuda   # on a GPU
    python benchmarks/groupformer_profile.py                                  # tiny on the CPU
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])  # the sibling benchmark's user turn

from groupformer_latency import user_turn  # noqa: E402

from ivbench.runner.clock import time_turn  # noqa: E402
from ivbench.systems.groupformer import GroupFormerSystem  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--group", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--engine", default="auto", help="auto, dynamic, static, graphs (engines.py)")
    args = parser.parse_args()

    import torch

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    system = GroupFormerSystem(init="random", size=args.size, group_size=args.group, device=args.device,
                               seed=0, max_groups=20, min_groups=20, chunk_groups=1,
                               engine=args.engine, max_positions=8192)
    system.load(args.device)
    llm = system.model.llm
    print(f"{args.size} on {args.device}: {type(llm).__name__}, dtype {next(llm.parameters()).dtype}, "
          f"attention {getattr(llm.config, '_attn_implementation', '?')}, engine {system.engine.name}")

    with torch.inference_mode():
        ids = torch.randint(0, min(1000, llm.config.vocab_size), (1, 64), device=args.device)
        for _ in range(2):
            out = llm(input_ids=ids, use_cache=True)
        sync()
        t0 = time.perf_counter()
        out = llm(input_ids=ids, use_cache=True)
        sync()
        prefill_ms = (time.perf_counter() - t0) * 1000
        cache = out.past_key_values
        step_ms = []
        for i in range(args.steps):
            t0 = time.perf_counter()
            out = llm(input_ids=ids[:, i:i + 1], past_key_values=cache, use_cache=True)
            sync()
            step_ms.append((time.perf_counter() - t0) * 1000)
    print(f"raw transformers LLM: prefill 64 tokens {prefill_ms:.1f} ms; decode step p50 "
          f"{statistics.median(step_ms):.2f} ms (min {min(step_ms):.2f})")

    turn = user_turn(3.0)
    for _ in range(2):
        session = system.new_session()
        time_turn(session, turn, timeout_s=600)
        session.close()
    session = system.new_session()
    timing = time_turn(session, turn, timeout_s=600)
    stats = session.last_stats
    print(f"groupformer s2s turn: {stats['groups']} groups in {stats['speech_generate_s'] * 1000:.0f} ms "
          f"= {stats['speech_generate_s'] * 1000 / max(stats['groups'], 1):.2f} ms per group; "
          f"end of reply {timing.end_ns / 1e6:.0f} ms")

    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    session = system.new_session()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in session.respond(turn):  # in this thread: the profiler records the calling thread
            pass
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=45))
    if args.device == "cuda":
        print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=45))


if __name__ == "__main__":
    main()
