"""How the LLM's positions are computed and kept: the two KV-cache engines of the Decoder.

- `DynamicEngine`: transformers' DynamicCache and the model called op by op. Works for any
  causal LM on any device; the CPU default.
- `StaticEngine`: the keys and values in preallocated buffers (`StaticKV`), the causal mask
  and positions computed on the device from one start index, so that each LLM call reads
  and writes only fixed tensors. Attention reads a window of the buffers — the smallest of
  a few lengths that holds the dialogue so far — so a short dialogue does not pay for the
  buffers' whole length. On CUDA every call is captured once as a CUDA graph and replayed:
  one decoding step (T = 1) and prefills padded to a few bucket lengths, each per window,
  and the GroupModel heads. A 7B decoding step otherwise spends most of its time launching some
  thousand small kernels from Python (launch-bound: the GPU idles ~85 % of a turn), which is
  what keeps the first packet far above the paper's figure.

Off CUDA, `StaticEngine(graphs=True)` calls the very functions a graph would capture, on the
same buffers (the tests replay them as recorded ops: cuda_graphs.py), so the CPU exercises
everything but the capture itself; `verify()` compares the engine against `DynamicEngine` on
the device before it is used.

An engine belongs to the model and is shared by its sessions; `owner` is the Decoder whose
dialogue the buffers hold, so a Decoder that finds another owner starts from position 0.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Optional
from collections.abc import Sequence

import torch

from ...errors import ConfigError
from .cuda_graphs import Replay, new_pool, relative_difference

log = logging.getLogger("ivbench.groupformer")

# Prefill lengths a static engine captures a graph for; a prefill is padded up to the next
# one (longer prefills run uncaptured).
BUCKETS = (8, 16, 32, 64, 128, 256, 512)
# Lengths of the KV buffers attention reads (the buffers' capacity is the last window).
WINDOWS = (256, 1024, 4096)


class DynamicEngine:
    """transformers' DynamicCache; the model is called op by op."""

    name = "dynamic"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: Any = None
        self.length = 0
        self.owner: Any = None
        self.fallback_reason: Optional[str] = None  # why make_engine chose this one over a static one

    @property
    def capacity(self) -> Optional[int]:
        return getattr(self.model.llm.config, "max_position_embeddings", None)

    def reset(self) -> None:
        self.cache = None
        self.length = 0

    def crop(self, keep: int) -> None:
        if keep <= 0:
            self.reset()
        elif keep < self.length:
            self.cache.crop(keep - self.length)  # negative: remove that many (any transformers version)
            self.length = keep

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.llm.config)
        except TypeError:  # transformers < 4.56
            return DynamicCache()

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """Append positions (1, T, H) after the held ones; the last hidden state (1, H)."""
        if self.cache is None:
            self.cache = self._new_cache()
        hidden = self.model.hidden_states(embeds, cache=self.cache)
        self.length += embeds.shape[1]
        return hidden[:, -1]

    def speech_heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return speech_heads(self.model, hidden)


def speech_heads(model: Any, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """After a position whose next token may be `<speech>`: (the `<speech>`/`<eosp>` logits (2,),
    the group's unit logits (G, n_units + 1))."""
    special = model.special
    return model.token_logits(hidden, [special.speech, special.eosp])[0], model.unit_logits(hidden)[0]


class StaticKV:
    """Keys and values of every layer in fixed buffers (1, kv_heads, capacity, head_dim).

    transformers' attention layers call `update(keys, values, layer_idx, …)` and attend to
    what it returns: the first `window` slots. The engine sets `positions` (where the block
    being fed goes) and `window` before each call and masks the slots past the positions, so
    stale or padded slots are never attended to."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (1, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.positions: Optional[torch.Tensor] = None
        self.window = capacity
        self.length = 0

    # transformers ≥ 5 passes `kwargs=`, earlier versions a cache_kwargs dict: neither is needed.
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        positions = self.positions
        assert positions is not None, "StaticKV.update before the engine set the positions"
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.index_copy_(2, positions, key_states.to(keys.dtype))
        values.index_copy_(2, positions, value_states.to(values.dtype))
        return keys[:, :, : self.window], values[:, :, : self.window]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length


class UnsupportedModel(ValueError):
    """The LLM does not fit the static engine (the caller falls back to the dynamic one)."""


def _static_shape(llm: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a plain full-attention decoder, or UnsupportedModel."""
    cfg = llm.config
    types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    window = getattr(cfg, "sliding_window", None)
    if window and getattr(cfg, "use_sliding_window", True):  # Qwen2 configs name a window they do not use
        types.add(f"sliding window {window}")
    if types != {"full_attention"}:
        raise UnsupportedModel(f"layers {sorted(types)}: the static engine masks full attention only")
    attn = getattr(cfg, "_attn_implementation", None) or "sdpa"
    if attn not in ("sdpa", "eager"):
        raise UnsupportedModel(f"attention implementation {attn!r}: the static engine needs sdpa or eager")
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return cfg.num_hidden_layers, getattr(cfg, "num_key_value_heads", None) or heads, head_dim


class StaticEngine:
    """Fixed KV buffers of `capacity` positions, read through the smallest of `windows` that
    holds the dialogue; on CUDA (or with `graphs=True`) every LLM call runs as a replayed graph:
    decoding steps and prefills padded to `buckets`, per window, and the heads."""

    def __init__(self, model: Any, capacity: int = 8192, graphs: Optional[bool] = None,
                 buckets: Sequence[int] = BUCKETS, windows: Sequence[int] = WINDOWS) -> None:
        layers, kv_heads, head_dim = _static_shape(model.llm)
        limit = getattr(model.llm.config, "max_position_embeddings", None)
        capacity = int(min(capacity, limit) if limit else capacity)
        self.model = model
        self.device = model.device
        self.dtype = model.dtype
        self.capture = self.device.type == "cuda" and graphs is not False
        self.graphs = bool(graphs) or self.capture
        self.kv = StaticKV(layers, kv_heads, head_dim, capacity, self.dtype, self.device)
        self.capacity = capacity
        self.buckets = tuple(sorted(b for b in buckets if b < capacity)) if self.graphs else ()
        self.windows = tuple(sorted(w for w in windows if w < capacity)) + (capacity,)
        self.owner: Any = None
        self._arange = torch.arange(capacity, device=self.device)
        self._start = torch.zeros(1, dtype=torch.long, device=self.device)
        self._min = torch.finfo(self.dtype).min
        params = inspect.signature(model.llm.get_decoder().forward).parameters
        self._takes_cache_position = "cache_position" in params
        self._buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # per length: embeds in, hidden out
        self._calls: dict[tuple[int, int], Replay] = {}  # per (length, window)
        self._heads: Optional[tuple[Replay, torch.Tensor, torch.Tensor, torch.Tensor]] = None
        self._pool = new_pool(self.capture)
        self.verified_difference: Optional[float] = None  # largest relative difference from DynamicEngine

    @property
    def length(self) -> int:
        """Positions held; kept by the KV buffers, which transformers may also ask."""
        return self.kv.length

    @length.setter
    def length(self, value: int) -> None:
        self.kv.length = value

    @property
    def name(self) -> str:
        return "cuda-graphs" if self.capture else "static-graphs" if self.graphs else "static"

    # ---- what the buffers hold --------------------------------------------------------------
    def reset(self) -> None:
        self.length = 0

    def crop(self, keep: int) -> None:
        # Slots past `length` are overwritten before they are attended to: nothing to clear.
        self.length = max(0, min(keep, self.length))

    # ---- the computations (graph bodies) ------------------------------------------------------
    def _llm(self, embeds: torch.Tensor, hidden_out: torch.Tensor, window: int) -> None:
        """Positions start … start + T - 1 (within the first `window` slots): write their
        keys/values, put their hidden states in `hidden_out`. Reads the start index from a device
        tensor, so a graph replays at any position."""
        positions = self._start + self._arange[: embeds.shape[1]]
        slots = self._arange[:window]
        blocked = slots.unsqueeze(0) > positions.unsqueeze(1)  # (T, window): keys after the query
        mask = blocked.to(self.dtype).mul_(self._min)[None, None]
        self.kv.positions = positions
        self.kv.window = window
        extra = {"cache_position": positions} if self._takes_cache_position else {}
        hidden = self.model.hidden_states(embeds, mask, cache=self.kv,
                                          position_ids=positions.unsqueeze(0), **extra)
        hidden_out.copy_(hidden)

    def _head_fn(self, hidden: torch.Tensor, choice_out: torch.Tensor, units_out: torch.Tensor) -> None:
        choice, units = speech_heads(self.model, hidden)
        choice_out.copy_(choice)
        units_out.copy_(units)

    # ---- graphs -----------------------------------------------------------------------------
    def _window(self, end: int) -> int:
        """The smallest window holding positions up to `end`."""
        return next(w for w in self.windows if w >= end)

    def _call(self, length: int, window: int) -> tuple[Replay, torch.Tensor, torch.Tensor]:
        buffers = self._buffers.get(length)
        if buffers is None:
            hidden_size = self.model.config.llm_hidden_size
            shape = (1, length, hidden_size)
            buffers = self._buffers[length] = (torch.zeros(shape, dtype=self.dtype, device=self.device),
                                               torch.zeros(shape, dtype=self.dtype, device=self.device))
        embeds, hidden = buffers
        call = self._calls.get((length, window))
        if call is None:
            self._start.fill_(self.length)  # the capture's warm-up runs write only free slots
            call = self._calls[length, window] = Replay(lambda: self._llm(embeds, hidden, window),
                                                        self.capture, self._pool)
        return call, embeds, hidden

    def prepare(self) -> StaticEngine:
        """Capture every graph now (model load), not in the first measured turn. Graphs are made
        once each: calling this again does nothing."""
        if self.graphs:
            if self.length:  # capture runs write from slot 0 on: a held dialogue's decoder starts again
                self.length, self.owner = 0, None
            with torch.inference_mode():
                for length in (1,) + self.buckets:
                    for window in self.windows:
                        if window >= length:
                            self._call(length, window)
                self._head_call()
        return self

    def _head_call(self) -> tuple[Replay, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._heads is None:
            cfg = self.model.config
            hidden = torch.zeros(1, cfg.llm_hidden_size, dtype=self.dtype, device=self.device)
            head_dtype = self.model.group_model.in_proj.weight.dtype
            choice = torch.zeros(2, dtype=self.dtype, device=self.device)
            units = torch.zeros(cfg.group_size, cfg.n_units + 1, dtype=head_dtype, device=self.device)
            call = Replay(lambda: self._head_fn(hidden, choice, units), self.capture, self._pool)
            self._heads = (call, hidden, choice, units)
        return self._heads

    # ---- the engine interface ---------------------------------------------------------------
    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """Append positions (1, T, H) after the held ones; the last hidden state (1, H)."""
        n = embeds.shape[1]
        if self.length + n > self.capacity:
            raise ValueError(f"the dialogue needs {self.length + n} positions; the static KV cache holds "
                             f"{self.capacity} (option max_positions)")
        padded = n if n == 1 else next((b for b in self.buckets if b >= n), None)
        if padded is None or not self.graphs or self.length + padded > self.capacity:
            hidden = torch.empty(1, n, embeds.shape[2], dtype=self.dtype, device=self.device)
            self._start.fill_(self.length)
            self._llm(embeds.to(self.dtype), hidden, self._window(self.length + n))
            last = hidden[:, -1]
        else:
            call, embeds_in, hidden_out = self._call(padded, self._window(self.length + padded))
            embeds_in[:, :n].copy_(embeds)
            self._start.fill_(self.length)
            call()
            last = hidden_out[:, n - 1].clone()
        self.length += n
        return last

    def speech_heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.graphs:
            return speech_heads(self.model, hidden)
        call, hidden_in, choice, units = self._head_call()
        hidden_in.copy_(hidden.reshape(hidden_in.shape))
        call()
        return choice.clone(), units.clone()

    # ---- checking a device ------------------------------------------------------------------
    @torch.inference_mode()
    def verify(self, positions: Optional[int] = None, steps: int = 3, tolerance: Optional[float] = None) -> float:
        """Feed the same random embeddings through this engine and a DynamicEngine (a prefill,
        then single steps, then the heads; by default the steps cross from the first window into
        the next); returns the largest relative difference and raises
        AssertionError beyond `tolerance` (default: 0.1 in 16-bit types, where rounding alone gives
        ~0.02 over 24 layers, and 1e-4 in float32; a wrong position or mask is off by the order of
        the states themselves)."""
        if tolerance is None:
            tolerance = 1e-4 if self.dtype == torch.float32 else 0.1
        if positions is None:
            positions = self.windows[0] - 1 if len(self.windows) > 1 else min(19, self.capacity - steps)
        generator = torch.Generator(device="cpu").manual_seed(0)
        hidden_size = self.model.config.llm_hidden_size
        feeds = [torch.randn(1, positions, hidden_size, generator=generator)]
        feeds += [torch.randn(1, 1, hidden_size, generator=generator) for _ in range(steps)]
        reference = DynamicEngine(self.model)
        self.reset()
        worst = 0.0
        try:
            for embeds in feeds:
                embeds = (embeds * 0.02).to(device=self.device, dtype=self.dtype)
                got, want = self.forward(embeds), reference.forward(embeds)
                worst = max(worst, relative_difference(got, want))
                # The heads get the same state on both sides: a 2-logit vector would magnify the
                # LLM's rounding differences, which the line above already bounds.
                for a, b in zip(self.speech_heads(want), reference.speech_heads(want)):
                    worst = max(worst, relative_difference(a, b))
        finally:
            self.length, self.owner = 0, None  # whatever a Decoder had here is overwritten
        if not worst <= tolerance:
            raise AssertionError(f"static engine differs from the dynamic one by {worst:.3g} (tolerance {tolerance})")
        return worst


def make_engine(model: Any, kind: str = "auto", capacity: int = 8192) -> Any:
    """`auto`: on CUDA the static engine with graphs, verified against the dynamic one (and the
    dynamic one, with a warning, where the LLM does not fit or the check fails); elsewhere
    `dynamic`. `dynamic`, `static` (fixed buffers, no graphs) and `graphs` force one."""
    kind = (kind or "auto").lower()
    if kind not in ("auto", "dynamic", "static", "graphs"):
        raise ConfigError(f"engine {kind!r}: use auto, dynamic, static or graphs")
    if kind == "dynamic" or (kind == "auto" and model.device.type != "cuda"):
        return DynamicEngine(model)
    try:
        engine = StaticEngine(model, capacity=capacity, graphs=kind != "static").prepare()
        engine.verified_difference = engine.verify()
        return engine
    except (UnsupportedModel, AssertionError, RuntimeError) as exc:
        if kind != "auto":
            raise
        log.warning("groupformer: the static/CUDA-graph engine is off (%s); decoding op by op", exc)
        fallback = DynamicEngine(model)
        fallback.fallback_reason = str(exc)
        return fallback
