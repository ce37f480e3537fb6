"""Write tests/data/torchaudio_resample.npz: torchaudio's own sinc resampler on a few short
signals, the reference that `ivbench.metrics.mos._sinc_resample` is checked against.

torchaudio has no build for the torch that ivbench uses, so this runs once, by hand, in a
separate environment. Its resampler is plain torch code, so the torchaudio wheel's Python
runs on ivbench's torch once its compiled extension (built for another torch) is removed:

    python -m venv /tmp/ta
    echo /path/to/ivbench/.venv/lib/python3.11/site-packages > /tmp/ta/lib/python3.11/site-packages/main.pth
    /tmp/ta/bin/pip install --no-deps torchaudio==2.11.0
    rm /tmp/ta/lib/python3.11/site-packages/torchaudio/lib/*.so
    /tmp/ta/bin/python tests/make_resample_fixture.py

(The file records the torch and torchaudio versions that made it: 2.13.0+cpu and 2.11.0.)

Each rate pair gets a mix of tones and noise lasting 50 ms (a few hundred to a few thousand
samples), resampled to 16 kHz with torchaudio's defaults (lowpass_filter_width=6,
rolloff=0.99, sinc_interp_hann), as SpeechMOS's UTMOS22 strong does in its forward.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchaudio

RATES = (24000, 22050, 44100, 8000)
TARGET = 16000
OUT = Path(__file__).resolve().parent / "data" / "torchaudio_resample.npz"


def signal(rate: int, seconds: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + rate)
    t = np.arange(int(rate * seconds)) / rate
    tones = sum(0.2 / k * np.sin(2 * np.pi * f * t + k) for k, f in enumerate((220, 1900, 3700, 7300), 1))
    return (tones + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def main() -> None:
    arrays = {"versions": np.array([torch.__version__, torchaudio.__version__])}
    for rate in RATES:
        x = signal(rate)
        y = torchaudio.functional.resample(torch.from_numpy(x)[None], orig_freq=rate, new_freq=TARGET)[0]
        arrays[f"in_{rate}"] = x
        arrays[f"out_{rate}"] = y.numpy()
        print(f"{rate} Hz: {len(x)} samples -> {len(y)} at {TARGET} Hz")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} (torch {torch.__version__}, torchaudio {torchaudio.__version__})")


if __name__ == "__main__":
    main()
