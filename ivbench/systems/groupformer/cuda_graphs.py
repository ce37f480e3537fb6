"""Fixed-shape work replayed as CUDA graphs.

A `Replay` wraps a function that reads and writes only tensors allocated before it (its
inputs are copied in, its outputs copied out by the caller): on CUDA it is captured once and
replayed — one launch instead of hundreds, which is what a launch-bound decoding step needs —
and anywhere else it is simply called, so the CPU runs exactly the code a graph would hold.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b|: how far a graphed computation is from the op-by-op one."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def new_pool(capture: bool) -> Any:
    """A memory pool graphs can share: they never run at the same time, and every output is
    copied into a tensor allocated outside the pool before another graph runs."""
    return torch.cuda.graph_pool_handle() if capture else None


class Replay:
    def __init__(self, fn: Callable[[], None], capture: bool, pool: Optional[Any] = None) -> None:
        self.fn = fn
        self.graph: Any = None
        if capture:
            # Lazy initialisations (cuBLAS workspaces, kernel selection) happen on a side stream
            # before capture, as torch.cuda.graphs asks.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                fn()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.fn()
