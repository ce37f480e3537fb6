"""Unit HiFi-GAN (speech-resynthesis family) and its streaming wrapper.

The generator: unit embedding → conv_pre → [leaky ReLU → transposed conv upsampling →
mean of multi-receptive-field residual blocks] × stages → conv_post → tanh. Parameter names
follow the released checkpoints (`dict`, `conv_pre`, `ups.i`, `resblocks.j.convs1/convs2`,
`conv_post`, `dur_predictor.*`), whose `generator` state dict holds weight-normed tensors
(`weight_g`/`weight_v`); those are folded into plain weights at load time, as inference does.

Unit id −1 is padding and is dropped before vocoding, as textlesslib's and fairseq's unit
vocoders drop every negative code: it adds no samples. A config or checkpoint that does not
fit is a ModelFileError naming the file and the key or shape at fault.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelFileError
from ...model_files import (
    load_safetensors_file,
    load_torch_file,
    read_json_object,
    require_keys,
    state_dict_mismatch,
)
from .config import STREAM_CONTEXT, STREAM_FADE, STREAM_LOOKAHEAD
from .cuda_graphs import Replay, new_pool

LRELU_SLOPE = 0.1
REQUIRED_KEYS = ("upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock_kernel_sizes",
                 "resblock_dilation_sizes", "num_embeddings", "embedding_dim")
DUR_PREDICTOR_KEYS = ("encoder_embed_dim", "var_pred_hidden_dim", "var_pred_kernel_size", "var_pred_dropout")
UNSUPPORTED = ("f0", "multispkr", "embedder_params", "multistyle")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _int_list(cfg: dict[str, Any], key: str, where: str) -> list[int]:
    value = cfg[key]
    if not isinstance(value, list) or not value or not all(_positive_int(v) for v in value):
        raise ModelFileError(f"{where}: {key} is {value!r}; expected a list of positive integers")
    return value


def _check_upsampling(cfg: dict[str, Any], where: str) -> None:
    rates = _int_list(cfg, "upsample_rates", where)
    kernels = _int_list(cfg, "upsample_kernel_sizes", where)
    if len(rates) != len(kernels):
        raise ModelFileError(f"{where}: {len(rates)} upsample_rates but {len(kernels)} upsample_kernel_sizes")
    for u, k in zip(rates, kernels):
        if (k - u) % 2:
            raise ModelFileError(f"{where}: upsampling kernel {k} with rate {u}: k - u must be even")
    if cfg["upsample_initial_channel"] % 2 ** len(rates):
        raise ModelFileError(f"{where}: upsample_initial_channel {cfg['upsample_initial_channel']} does not halve "
                             f"{len(rates)} times")
    hop = int(np.prod(rates))
    if "code_hop_size" in cfg and cfg["code_hop_size"] != hop:
        raise ModelFileError(f"{where}: code_hop_size {cfg['code_hop_size']} but the upsample_rates multiply to {hop}")


def _check_resblocks(cfg: dict[str, Any], where: str) -> None:
    kernels = _int_list(cfg, "resblock_kernel_sizes", where)
    dilations = cfg["resblock_dilation_sizes"]
    if not isinstance(dilations, list) or len(dilations) != len(kernels) or not all(
            isinstance(d, list) and d and all(_positive_int(x) for x in d) for d in dilations):
        raise ModelFileError(f"{where}: resblock_dilation_sizes {dilations!r} must be {len(kernels)} lists of "
                             "positive integers, one per resblock kernel size")
    if str(cfg.get("resblock", "1")) not in ("1", "2"):
        raise ModelFileError(f"{where}: resblock {cfg['resblock']!r}; expected \"1\" or \"2\"")


def check_config(cfg: Any, where: str = "vocoder config") -> None:
    """A unit HiFi-GAN config (speech-resynthesis JSON) that this generator can be built from;
    else a ModelFileError naming `where` and the key at fault."""
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{where} is a {type(cfg).__name__}, not an object of settings")
    require_keys(cfg, REQUIRED_KEYS, where)
    for key in UNSUPPORTED:
        if cfg.get(key):
            raise ModelFileError(f"{where} sets {key!r}: only single-speaker unit vocoders without F0 "
                                 "(such as the TWIST LJ one) are supported")
    for key in ("upsample_initial_channel", "num_embeddings", "embedding_dim"):
        if not _positive_int(cfg[key]):
            raise ModelFileError(f"{where}: {key} is {cfg[key]!r}; expected a positive integer")
    if cfg.get("model_in_dim", cfg["embedding_dim"]) != cfg["embedding_dim"]:
        raise ModelFileError(f"{where}: model_in_dim {cfg['model_in_dim']} differs from embedding_dim "
                             f"{cfg['embedding_dim']}: extra (F0, speaker) inputs are not supported")
    if "sampling_rate" in cfg and not _positive_int(cfg["sampling_rate"]):
        raise ModelFileError(f"{where}: sampling_rate is {cfg['sampling_rate']!r}; expected a positive integer")
    _check_upsampling(cfg, where)
    _check_resblocks(cfg, where)
    params = cfg.get("dur_predictor_params")
    if params:
        if not isinstance(params, dict):
            raise ModelFileError(f"{where}: dur_predictor_params is {params!r}; expected an object")
        require_keys(params, DUR_PREDICTOR_KEYS, f"{where}: dur_predictor_params")


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Pairs of (dilated conv, conv) with a residual connection around each pair."""

    def __init__(self, channels: int, kernel: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, 1, dilation=d, padding=_padding(kernel, d))
            for d in dilations)
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, 1, dilation=1, padding=_padding(kernel))
            for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for first, second in zip(self.convs1, self.convs2):
            y = first(F.leaky_relu(x, LRELU_SLOPE))
            y = second(F.leaky_relu(y, LRELU_SLOPE))
            x = x + y
        return x


class ResBlock2(nn.Module):
    """One dilated conv per residual step (HiFi-GAN V3)."""

    def __init__(self, channels: int, kernel: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, 1, dilation=d, padding=_padding(kernel, d))
            for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class DurationPredictor(nn.Module):
    """Present in the TWIST vocoder checkpoint; only used for de-duplicated units."""

    def __init__(self, in_dim: int, hidden: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(in_dim, hidden, kernel, padding=(kernel - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(hidden)
        self.conv2 = nn.Sequential(nn.Conv1d(hidden, hidden, kernel, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, 1)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T) log-durations
        x = self.conv1(x.transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.ln1(x), self.dropout, self.training)
        x = self.conv2(x.transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.ln2(x), self.dropout, self.training)
        return self.proj(x).squeeze(-1)


class UnitHiFiGAN(nn.Module):
    """The code (unit) HiFi-GAN generator for one speaker, no F0 conditioning."""

    def __init__(self, cfg: dict[str, Any], source: str = "vocoder config") -> None:
        super().__init__()
        check_config(cfg, source)
        self.cfg = dict(cfg)
        self.source = source  # where the weights came from, for error messages
        rates, kernels = cfg["upsample_rates"], cfg["upsample_kernel_sizes"]
        self.hop = int(np.prod(rates))
        channels = cfg["upsample_initial_channel"]
        self.dict = nn.Embedding(cfg["num_embeddings"], cfg["embedding_dim"])
        self.conv_pre = nn.Conv1d(cfg.get("model_in_dim", cfg["embedding_dim"]), channels, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(channels // 2 ** i, channels // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(rates, kernels)))
        block = ResBlock2 if str(cfg.get("resblock", "1")) == "2" else ResBlock1
        self.num_kernels = len(cfg["resblock_kernel_sizes"])
        self.resblocks = nn.ModuleList(
            block(channels // 2 ** (i + 1), k, d)
            for i in range(len(rates))
            for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]))
        self.conv_post = nn.Conv1d(channels // 2 ** len(rates), 1, 7, 1, padding=3)
        params = cfg.get("dur_predictor_params")
        self.dur_predictor = (DurationPredictor(params["encoder_embed_dim"], params["var_pred_hidden_dim"],
                                                params["var_pred_kernel_size"], params["var_pred_dropout"])
                              if params else None)

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.get("sampling_rate", 16000))

    def forward(self, units: torch.Tensor) -> torch.Tensor:
        """(B, T) unit ids → (B, T · hop) samples in [-1, 1]."""
        x = self.conv_pre(self.dict(units).transpose(1, 2))
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            y = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                y = y + self.resblocks[i * self.num_kernels + j](x)
            x = y / self.num_kernels
        # The released generators use leaky ReLU's default slope (0.01) before conv_post.
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x).squeeze(1)

    def receptive_field(self) -> int:
        """Units on each side that can change a unit's samples (an upper bound): the look-ahead
        and left context at which streamed chunks equal the whole-utterance output."""
        reach = 3.0  # conv_pre, kernel 7, at the unit rate
        rate = 1
        for i, (u, k) in enumerate(zip(self.cfg["upsample_rates"], self.cfg["upsample_kernel_sizes"])):
            reach += (k / u + 1) / rate  # transposed conv, in units
            rate *= u
            branch = 0.0
            for j in range(self.num_kernels):
                block = self.resblocks[i * self.num_kernels + j]
                convs = list(getattr(block, "convs1", [])) + list(getattr(block, "convs2", [])) + list(
                    getattr(block, "convs", []))
                branch = max(branch, sum(c.dilation[0] * (c.kernel_size[0] - 1) / 2 for c in convs))
            reach += branch / rate
        reach += 3 / rate  # conv_post
        return int(np.ceil(reach))

    def unit_ids(self, units: Union[torch.Tensor, list[int], np.ndarray],
                 device: Optional[torch.device] = None) -> torch.Tensor:
        """Units as a (1, T) id tensor for the embedding: negative ids (−1 pads unit sequences)
        are dropped, as textlesslib and fairseq drop them; an id past the embedding table is a
        bug upstream (ValueError)."""
        ids = torch.as_tensor(units, dtype=torch.long).reshape(-1).cpu()  # checked on the host
        ids = ids[ids >= 0]
        if len(ids) and int(ids.max()) >= self.dict.num_embeddings:
            raise ValueError(f"unit {int(ids.max())} is past the vocoder's {self.dict.num_embeddings} units")
        return ids.reshape(1, -1).to(device if device is not None else self.dict.weight.device)

    @torch.inference_mode()
    def synthesize(self, units: Union[torch.Tensor, list[int], np.ndarray]) -> torch.Tensor:
        """One utterance of units → samples (1-D tensor on the vocoder's device), `hop` per unit
        kept (none for padding)."""
        ids = self.unit_ids(units)
        if ids.shape[1] == 0:
            return torch.zeros(0, device=self.dict.weight.device)
        return self(ids)[0]

    def save(self, checkpoint: Union[str, Path], config: Union[str, Path]) -> None:
        """Write the released format: torch {"generator": state_dict} and a config JSON."""
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        Path(config).parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().float() for k, v in self.state_dict().items()}
        torch.save({"generator": state}, str(checkpoint))
        Path(config).write_text(json.dumps(self.cfg, indent=2) + "\n")


def fold_weight_norm(state: dict[str, torch.Tensor], where: str = "vocoder checkpoint") -> dict[str, torch.Tensor]:
    """`x.weight_g`/`x.weight_v` (torch weight_norm, dim 0) → `x.weight`; also the newer
    `x.parametrizations.weight.original0/1` form."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        if name.endswith(".weight_g") or name.endswith(".weight_v"):
            pairs.setdefault(name[: -len(".weight_g")], {})[name[-1]] = tensor
        elif ".parametrizations.weight.original" in name:
            base, _, which = name.partition(".parametrizations.weight.original")
            pairs.setdefault(base, {})["g" if which == "0" else "v"] = tensor
        else:
            out[name] = tensor
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise ModelFileError(f"{where}: {base} has only part of a weight-norm pair (weight_g and weight_v)")
        g, v = gv["g"].float(), gv["v"].float()
        if g.numel() != v.shape[0]:
            raise ModelFileError(f"{where}: {base}.weight_g has shape {tuple(g.shape)}, not one norm per output "
                                 f"channel of weight_v {tuple(v.shape)}")
        norm = v.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (v.dim() - 1))
        out[base + ".weight"] = v * (g / norm)
    return out


def load_vocoder(checkpoint: Union[str, Path], config: Union[str, Path]) -> UnitHiFiGAN:
    """A released unit HiFi-GAN: `checkpoint` (torch, with a "generator" state dict; or a
    safetensors file) and its config JSON. Any problem with either is a ModelFileError that
    names the file and what is wrong."""
    checkpoint, config = Path(checkpoint).expanduser(), Path(config).expanduser()
    where = f"vocoder checkpoint {checkpoint}"
    model = UnitHiFiGAN(read_json_object(config, "vocoder config"), source=f"vocoder config {config}")
    model.source = where
    if checkpoint.suffix == ".safetensors":
        state: Any = load_safetensors_file(checkpoint, "vocoder checkpoint")
    else:
        state = load_torch_file(checkpoint, "vocoder checkpoint")
        if isinstance(state, dict) and isinstance(state.get("generator"), dict):
            state = state["generator"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{where} holds no generator state dict (a dict of tensors, or one under "
                             "\"generator\"): is it a unit HiFi-GAN checkpoint?")
    state = fold_weight_norm(state, where)
    # The duration predictor is unused here (units are not de-duplicated): tolerate its absence
    # from either the checkpoint or the config.
    problem = state_dict_mismatch(model.state_dict(), state, optional=("dur_predictor.",))
    if problem:
        raise ModelFileError(f"{where} does not fit vocoder config {config}: {problem}")
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=False)
    return model.eval()


def random_vocoder(cfg: dict[str, Any], seed: int = 0) -> UnitHiFiGAN:
    """Random weights (torch's default initialisation: the signal shrinks layer by layer, and
    the output is nearly a constant with a small varying part)."""
    torch.manual_seed(seed)
    return UnitHiFiGAN(cfg).eval()


def signal_vocoder(cfg: dict[str, Any], seed: int = 0) -> UnitHiFiGAN:
    """Random weights that keep the signal's variance through every convolution (normal, scaled
    by each output sample's fan-in), so that the output varies like speech (about an offset that
    a signal-to-error ratio should leave out: compare powers about the mean), and
    each sample depends on the units around it as far as the architecture reaches — every tap
    of every layer counts. What streamed vocoding loses against whole-utterance vocoding is
    measured on this vocoder (benchmarks/vocoder_streaming.py): without released weights at
    hand, a case where distant units matter as much as the architecture lets them. (Torch's
    default initialisation shrinks the signal to a near-constant, which makes any
    signal-to-error ratio meaningless.)"""
    vocoder = random_vocoder(cfg, seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in vocoder.modules():
            if isinstance(module, nn.ConvTranspose1d):  # weight (in, out, k): k / stride taps reach a sample
                fan_in = module.weight.shape[0] * module.weight.shape[2] / module.stride[0]
            elif isinstance(module, nn.Conv1d):  # weight (out, in, k)
                fan_in = module.weight.shape[1] * module.weight.shape[2]
            else:
                continue
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in ** 0.5)
    return vocoder


class GraphedVocoder:
    """The vocoder on fixed buffers for every unit count up to `max_units` — a streamed chunk is
    never longer than context + chunk + look-ahead — replayed as CUDA graphs on CUDA (called
    directly elsewhere). Longer inputs are vocoded op by op. Same interface as UnitHiFiGAN
    for StreamingVocoder: `hop`, `sample_rate`, `synthesize`."""

    def __init__(self, vocoder: UnitHiFiGAN, max_units: int, capture: Optional[bool] = None) -> None:
        self.vocoder = vocoder
        self.hop = vocoder.hop
        self.sample_rate = vocoder.sample_rate
        self.max_units = int(max_units)
        self.device = vocoder.dict.weight.device
        self.capture = self.device.type == "cuda" if capture is None else bool(capture)
        self._pool = new_pool(self.capture)
        self._calls: dict[int, tuple[Replay, torch.Tensor, torch.Tensor]] = {}

    def _call(self, n: int) -> tuple[Replay, torch.Tensor, torch.Tensor]:
        found = self._calls.get(n)
        if found is None:
            units = torch.zeros(1, n, dtype=torch.long, device=self.device)
            audio = torch.zeros(1, n * self.hop, dtype=torch.float32, device=self.device)

            def body() -> None:
                audio.copy_(self.vocoder(units))

            found = self._calls[n] = (Replay(body, self.capture, self._pool), units, audio)
        return found

    @torch.inference_mode()
    def prepare(self) -> GraphedVocoder:
        """Capture every length now (model load), not in a measured turn."""
        for n in range(1, self.max_units + 1):
            self._call(n)
        return self

    @torch.inference_mode()
    def synthesize(self, units: Union[torch.Tensor, list[int], np.ndarray]) -> torch.Tensor:
        ids = self.vocoder.unit_ids(units)
        n = ids.shape[1]
        if not 0 < n <= self.max_units:
            return self.vocoder.synthesize(ids)
        call, buffer, audio = self._call(n)
        buffer.copy_(ids)
        call()
        return audio[0].clone()


class StreamingVocoder:
    """Vocode a growing unit stream in chunks: every `chunk_groups` pushes, synthesise the
    units that have `lookahead` units after them, re-using `context` units of left context,
    and cross-fade each seam over `fade` samples (taken from the look-ahead region).

    The joined chunks equal the whole-utterance output away from the seams (up to the
    vocoder's receptive field beyond the context and look-ahead). The defaults (config.py)
    keep the streamed audio ≥ 40 dB from whole-utterance vocoding on the vocoders of
    benchmarks/vocoder_streaming.py.
    """

    def __init__(self, vocoder: Union[UnitHiFiGAN, GraphedVocoder], chunk_groups: int = 1,
                 lookahead: int = STREAM_LOOKAHEAD, context: int = STREAM_CONTEXT, fade: int = STREAM_FADE) -> None:
        self.vocoder = vocoder
        self.hop = vocoder.hop
        self.chunk_groups = max(1, int(chunk_groups))
        self.lookahead = max(0, int(lookahead))
        self.context = max(0, int(context))
        self.fade = min(max(0, int(fade)), self.lookahead * self.hop)
        self.units: list[int] = []
        self.done_units = 0  # audio up to this unit has been emitted (the fade tail is held)
        self.tail: Optional[np.ndarray] = None
        self.pushes = 0
        ramp = np.linspace(0.0, 1.0, self.fade + 2, dtype=np.float32)[1:-1]
        self._ramp_in = 0.5 - 0.5 * np.cos(np.pi * ramp)  # raised cosine

    @staticmethod
    def longest_input(group_size: int, chunk_groups: int = 1, lookahead: int = STREAM_LOOKAHEAD,
                      context: int = STREAM_CONTEXT) -> int:
        """The most units one synthesis call gets: left context + a chunk's groups + look-ahead."""
        return max(0, int(context)) + max(1, int(chunk_groups)) * int(group_size) + max(0, int(lookahead))

    def _synth(self, start: int) -> np.ndarray:
        audio = self.vocoder.synthesize(self.units[start:])
        return audio.float().cpu().numpy()

    def _emit(self, end: int, final: bool) -> Optional[np.ndarray]:
        if end <= self.done_units:
            return None
        start = max(0, self.done_units - self.context)
        audio = self._synth(start)
        offset = (self.done_units - start) * self.hop
        stop = (end - start) * self.hop
        chunk = audio[offset:stop].copy()
        if self.tail is not None and len(self.tail):
            n = min(len(self.tail), len(chunk))
            ramp = self._ramp_in[:n]
            chunk[:n] = self.tail[:n] * (1.0 - ramp) + chunk[:n] * ramp
        self.tail = None if final or self.fade == 0 else audio[stop:stop + self.fade].copy()
        self.done_units = end
        return chunk

    def push(self, units: list[int]) -> Optional[np.ndarray]:
        """Add one group's units; returns a chunk of samples when one is due. Padding (negative
        ids) is dropped here, so that every kept unit is `hop` samples of the stream."""
        self.units.extend(int(u) for u in units if int(u) >= 0)
        self.pushes += 1
        if self.pushes % self.chunk_groups:
            return None
        return self._emit(len(self.units) - self.lookahead, final=False)

    def flush(self) -> Optional[np.ndarray]:
        """The rest of the utterance."""
        return self._emit(len(self.units), final=True)
