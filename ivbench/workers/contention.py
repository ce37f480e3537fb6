"""Whether workers measured latency while sharing hardware (docs/architecture.md, "Workers").

Two workers that run at once on the CPUs of one machine, or on one GPU, slow each other down:
their latencies are real but not those of a system alone on that hardware. The run says so (in
its manifest, the command's output and the report) rather than let such figures pass for
uncontended ones. Workers are compared by the fingerprints they sent once loaded.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any


def notes(fingerprints: dict[str, dict[str, Any]], slots: int) -> list[str]:
    """One line per group of workers of one system that shared a machine's CPUs or a GPU."""
    if slots < 2:  # one worker at a time: a restarted worker replaces its predecessor
        return []
    by_host: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for worker, fingerprint in sorted(fingerprints.items()):
        by_host[str(fingerprint.get("host", "?"))].append((worker, fingerprint))
    found: list[str] = []
    for host, group in sorted(by_host.items()):
        on_cpu = [worker for worker, fp in group if fp.get("device") != "cuda"]
        if len(on_cpu) > 1:
            cores = group[0][1].get("cpu_count", "?")
            found.append(f"{len(on_cpu)} workers ({', '.join(on_cpu)}) shared the {cores} CPU cores of {host}")
        by_gpu: dict[str, list[str]] = defaultdict(list)
        for worker, fp in group:
            if fp.get("device") == "cuda":
                by_gpu[str(fp.get("gpu_ids") or fp.get("cuda_visible_devices") or "all")].append(worker)
        for gpu, workers in sorted(by_gpu.items()):
            if len(workers) > 1:
                found.append(f"{len(workers)} workers ({', '.join(workers)}) shared GPU {gpu} of {host}")
    return found
