"""Band-limited (windowed-sinc) resampling in torch, as `torchaudio.functional.resample` does it
with its defaults (Hann-windowed sinc, 6 zero crossings, cut-off 0.99 of the lower Nyquist).

SpeechMOS's UTMOS22 strong resamples its input this way inside `forward`; torchaudio has no
build for every torch, so the same filter is derived here (docs/architecture.md, "Model
files"). Checked against torchaudio's output in tests/data/torchaudio_resample.npz.

Both rates are divided by their gcd: p input samples span the same time as q output samples.
Output sample j (0 ≤ j < q) of each block of q sits at time j/q (in block units) and is
    y[j] = Σ_i x[i] · h(i/p − j/q),   h(τ) = c/p · sinc(c τ) · cos²(π c τ / 2Z), |c τ| ≤ Z,
with c = min(p, q) · rolloff the cut-off and Z the zero crossings kept. The q phases are q
filters of one length applied with stride p (a strided conv1d), interleaved afterwards.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ZERO_CROSSINGS = 6
ROLLOFF = 0.99


def resampled_length(samples: int, orig: int, new: int) -> int:
    """Samples out of `samples` in: ceil(samples · new / orig)."""
    g = math.gcd(int(orig), int(new))
    p, q = int(orig) // g, int(new) // g
    return -(-samples * q // p)


def sinc_filters(orig: int, new: int, *, zero_crossings: int = ZERO_CROSSINGS, rolloff: float = ROLLOFF,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> tuple[Tensor, int]:
    """The q phase filters (q, 1, 2·half + p) and `half`, the input samples each reaches back.

    Computed in `dtype`, as torchaudio computes them in the waveform's dtype (so float32 input
    gives the same float32 rounding)."""
    g = math.gcd(int(orig), int(new))
    p, q = int(orig) // g, int(new) // g
    cutoff = min(p, q) * rolloff
    half = math.ceil(zero_crossings * p / cutoff)
    taps = torch.arange(-half, half + p, dtype=dtype, device=device)[None, None] / p  # input times i/p
    phases = torch.arange(0, -q, -1, dtype=dtype, device=device)[:, None, None] / q  # −j/q
    x = ((phases + taps) * cutoff).clamp(-zero_crossings, zero_crossings)  # c·τ, kept within ±Z
    window = torch.cos(x * (math.pi / zero_crossings / 2)) ** 2
    x = x * math.pi
    sinc = torch.where(x == 0, torch.ones((), dtype=dtype, device=device), torch.sin(x) / x)
    return sinc * (window * (cutoff / p)), half


def sinc_resample(wave: Tensor, orig: int, new: int) -> Tensor:
    """`wave` (..., T) at `orig` Hz → (..., ceil(T · new / orig)) at `new` Hz."""
    if int(orig) <= 0 or int(new) <= 0 or orig != int(orig) or new != int(new):
        raise ValueError(f"sample rates must be positive integers, got {orig} and {new}")
    if int(orig) == int(new):
        return wave
    if not wave.is_floating_point():
        raise TypeError(f"resampling needs floating-point samples, got {wave.dtype}")
    g = math.gcd(int(orig), int(new))
    p = int(orig) // g
    filters, half = sinc_filters(orig, new, dtype=wave.dtype, device=wave.device)
    shape = wave.shape
    flat = wave.reshape(-1, shape[-1])
    # Zeros before and after: the first output sample sees `half` samples of left context; one
    # more block on the right so that the last output block is complete.
    padded = F.pad(flat, (half, half + p))
    blocks = F.conv1d(padded[:, None], filters, stride=p)  # (N, q, blocks): phase j of each block
    out = blocks.transpose(1, 2).reshape(flat.shape[0], -1)[:, :resampled_length(shape[-1], orig, new)]
    return out.reshape(*shape[:-1], out.shape[-1])
