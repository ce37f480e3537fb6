"""Fixed-shape work replayed as CUDA graphs.

A `Replay` wraps a function that reads and writes only tensors allocated before it (its
inputs are copied in, its outputs copied out by the caller): on CUDA it is captured once and
replayed — one launch instead of hundreds, which is what a launch-bound decoding step needs —
and anywhere else it is simply called, so the CPU runs exactly the code a graph would hold.

A graph holds the kernels and the addresses of one run, not the Python that launched them:
a Python number read in the body, or a tensor the body finds in an attribute that is later
swapped for another, is frozen at capture. `IVBENCH_EMULATE_GRAPHS=1` gives those semantics
without a GPU: the body's aten ops are recorded once (after the same warm-up as a capture) and
every call replays the recording — the same ops with the same arguments on the same tensors.
The test suite runs the graph bodies this way, so such a bug fails on the CPU too.
"""
from __future__ import annotations

import os
from typing import Any, Optional
from collections.abc import Callable

import torch


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b|: how far a graphed computation is from the op-by-op one."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def new_pool(capture: bool) -> Any:
    """A memory pool graphs can share: they never run at the same time, and every output is
    copied into a tensor allocated outside the pool before another graph runs."""
    return torch.cuda.graph_pool_handle() if capture else None


def emulating() -> bool:
    """Whether bodies that are not captured are recorded and replayed (IVBENCH_EMULATE_GRAPHS=1)."""
    return os.environ.get("IVBENCH_EMULATE_GRAPHS", "") == "1"


# Ops a CUDA capture refuses: a value read back to the host, an output sized by values, or a
# tensor made from host values (a copy from pageable memory). A boolean index counts too.
CAPTURE_REFUSES = {"item", "_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "equal", "allclose",
                   "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim", "repeat_interleave",
                   "lift_fresh", "lift_fresh_copy"}


def capture_refuses(func: Any, args: tuple[Any, ...]) -> bool:
    """Whether a CUDA capture would fail on aten op `func` called with `args`."""
    name = func.overloadpacket.__name__
    second = args[1] if name.startswith("index") and len(args) > 1 else None
    indices = second if isinstance(second, (list, tuple)) else ()  # aten.index(self, indices)
    return name in CAPTURE_REFUSES or any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


class _Held:
    """A tensor that existed before the recording: a graph holds its address."""
    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class _Made:
    """Output `index` of recorded op `step`."""
    __slots__ = ("step", "index")

    def __init__(self, step: int, index: int) -> None:
        self.step, self.index = step, index


class RecordedOps:
    """The aten ops of one call of `fn`, with their arguments as they were: the CPU's stand-in
    for a captured CUDA graph. Like a capture, recording fails (RuntimeError) on an op that
    makes the host wait for the device or copies host values in."""

    def __init__(self, fn: Callable[[], None]) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten, tree_map

        steps: list[tuple[Any, Any, Any]] = []
        made: dict[int, tuple[int, int]] = {}
        alive: list[torch.Tensor] = []  # every tensor seen stays alive while recording: ids stay unique

        def refer(x: Any) -> Any:
            if not isinstance(x, torch.Tensor):
                return x
            alive.append(x)
            where = made.get(id(x))
            return _Made(*where) if where else _Held(x)

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                                   kwargs: Optional[dict[str, Any]] = None) -> Any:
                kwargs = kwargs or {}
                if capture_refuses(func, args):
                    raise RuntimeError(f"aten.{func.overloadpacket.__name__} in a graph body: a CUDA capture "
                                       "refuses it (it waits for the device, or copies host values in)")
                spec = (func, tree_map(refer, args), tree_map(refer, kwargs))
                out = func(*args, **kwargs)
                for index, leaf in enumerate(tree_flatten(out)[0]):
                    if isinstance(leaf, torch.Tensor):
                        alive.append(leaf)
                        made[id(leaf)] = (len(steps), index)
                steps.append(spec)
                return out

        with Record():
            fn()
        self.steps = steps

    def replay(self) -> None:
        from torch.utils._pytree import tree_flatten, tree_map

        outputs: list[list[Any]] = []

        def resolve(x: Any) -> Any:
            if isinstance(x, _Made):
                return outputs[x.step][x.index]
            return x.tensor if isinstance(x, _Held) else x

        for func, args, kwargs in self.steps:
            outputs.append(tree_flatten(func(*tree_map(resolve, args), **tree_map(resolve, kwargs)))[0])


class Replay:
    def __init__(self, fn: Callable[[], None], capture: bool, pool: Optional[Any] = None) -> None:
        self.fn = fn
        self.graph: Any = None
        if not capture and emulating():
            for _ in range(2):  # the warm-up a capture has
                fn()
            self.graph = RecordedOps(fn)
        elif capture:
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
