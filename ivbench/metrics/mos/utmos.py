"""UTMOS: the UTMOS22 strong learner (SaruLab, VoiceMOS Challenge 2022), predicted naturalness.

No package registry ships its weights. Give the released checkpoint
`utmos22_strong_step7459_v1.pt` (the SpeechMOS state dict of the UTMOS22 strong learner), or
the UTMOS22 repository's own PyTorch Lightning checkpoint `epoch=3-step=7459.ckpt` (read
without Lightning; scored as listener 288 of domain 0, as the UTMOS demo and SpeechMOS do):

- `checkpoint=/path/to/utmos22_strong_step7459_v1.pt`: a local file;
- `checkpoint=download` (or an http(s) URL): fetched once with `torch.hub` into its cache
  (`~/.cache/torch/hub/checkpoints`), where the machine has network;
- no checkpoint: the file in torch.hub's cache, if an earlier download put it there.

The architecture is written out in `_utmos_model` so that the released file loads strictly.
Each reply goes in at its own sample rate and is resampled to 16 kHz inside the model with
torchaudio's windowed-sinc filter, as SpeechMOS does, so a score equals the reference's
(resampling first with another resampler moves it by ~1e-2). Clips are scored one length
at a time (the model's first group norm and its BLSTM see the whole clip, so padding would
change the score); clips of one rate and length share a batch.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..base import FieldInfo, Metric, MetricResult, Need, ScoreItem, ScoringContext, Status
from ...cache import sha256_file
from ...errors import ModelFileError
from ...model_files import load_torch_file
from ._common import SAMPLE_RATE, check_batch_size, failed, reply_native, require

RELEASE_URL = "https://github.com/tarepan/SpeechMOS/releases/download/v1.0.0/utmos22_strong_step7459_v1.pt"
FILE_NAME = "utmos22_strong_step7459_v1.pt"
# How the model hears a reply: in the identity, so scores made before resampling moved into
# the model (soxr to 16 kHz first) are not re-used from the cache.
RESAMPLER = "in-model windowed sinc (torchaudio defaults: hann, 6 zero crossings, rolloff 0.99)"


class CheckpointError(ModelFileError, FileNotFoundError):
    """No usable UTMOS checkpoint, with where to get one."""


def _how_to_get() -> str:
    return (f"download {FILE_NAME} from {RELEASE_URL} and pass it as "
            f"`--metrics utmos:checkpoint=/path/to/{FILE_NAME}` (or `UTMOS(checkpoint=...)`); "
            "on a machine with network, `utmos:checkpoint=download` fetches it with torch.hub")


class UTMOS(Metric):
    name = "utmos"
    description = "UTMOS22 strong learner naturalness MOS; needs checkpoint=/path (weights are not in any registry)"
    needs = frozenset({Need.REPLY_AUDIO})
    uses_gpu = True
    fields = {"mos": FieldInfo(True, "MOS 1-5", "UTMOS22 strong learner predicted naturalness")}

    def __init__(self, checkpoint: Optional[str] = None, batch_size: int = 4, **options: Any) -> None:
        check_batch_size(self.name, batch_size)
        super().__init__(**options)
        self.checkpoint = None if checkpoint in (None, "") else str(checkpoint)
        self.batch_size = batch_size
        self.device = "cpu"
        self._path: Optional[Path] = None
        self._digest: Optional[str] = None
        self._model: Any = None
        self._lock = threading.Lock()

    # -- the checkpoint --------------------------------------------------------------------
    def _hub_file(self, url: str) -> Path:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1].split("?")[0]

    def checkpoint_path(self) -> Path:
        """The local checkpoint file, downloading it first when a URL was given."""
        if self._path is not None:
            return self._path
        ref = self.checkpoint
        if ref is None:
            require("torch", self.name)
            cached = self._hub_file(RELEASE_URL)
            if not cached.is_file():
                raise CheckpointError(f"utmos needs the UTMOS22 strong checkpoint: {_how_to_get()}")
            path = cached
        elif ref == "download" or ref.startswith(("http://", "https://")):
            torch = require("torch", self.name)
            url = RELEASE_URL if ref == "download" else ref
            path = self._hub_file(url)
            if not path.is_file():
                torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True)
        else:
            path = Path(ref).expanduser()
            if not path.is_file():
                raise CheckpointError(f"utmos checkpoint {path} not found: {_how_to_get()}")
        self._path = path
        return path

    def identity(self) -> dict[str, Any]:
        if self._digest is None:
            self._digest = sha256_file(self.checkpoint_path())[:16]
        return {"metric": self.name, "checkpoint_sha256": self._digest, "sample_rate": SAMPLE_RATE,
                "resampler": RESAMPLER, "options": self.options}

    def load(self, context: Optional[ScoringContext] = None) -> None:
        with self._lock:
            if self._model is not None:
                return
            require("torch", self.name)
            from ._utmos_model import UTMOS22Strong

            model = UTMOS22Strong()
            model.load_state_dict(read_checkpoint(self.checkpoint_path(), model), strict=True)
            self.device = (context.device if context is not None else None) or "cpu"
            self._model = model.eval().to(self.device)

    # -- scoring ---------------------------------------------------------------------------
    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return {"audio": item.reply_audio_sha256()}

    def predict(self, waves: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """MOS of a [batch, samples] float32 array of clips of one length at `sample_rate`."""
        import torch

        self.load()
        with torch.inference_mode():
            wave = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)).to(self.device)
            out = self._model(wave, sample_rate)
        return out.float().cpu().numpy()

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        from ._sinc_resample import resampled_length
        from ._utmos_model import MIN_SAMPLES

        self.load()
        results: list[Optional[MetricResult]] = [None] * len(items)
        by_shape: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}  # (rate, samples) -> clips
        for i, item in enumerate(items):
            try:
                wave, rate = reply_native(item)
            except Exception as exc:
                results[i] = failed(self.fields, exc)
                continue
            if resampled_length(len(wave), rate, SAMPLE_RATE) < MIN_SAMPLES:
                results[i] = MetricResult.unavailable(
                    self.fields, Status.MISSING,
                    f"reply audio is {1000 * len(wave) / rate:.0f} ms; UTMOS needs at least "
                    f"{1000 * MIN_SAMPLES / SAMPLE_RATE:.0f} ms")
                continue
            by_shape.setdefault((rate, len(wave)), []).append((i, wave))
        for (rate, _), group in by_shape.items():
            for s in range(0, len(group), self.batch_size):
                part = group[s:s + self.batch_size]
                try:
                    scores = self.predict(np.stack([w for _, w in part]), rate)
                except Exception as exc:
                    for i, _ in part:
                        results[i] = failed(self.fields, exc)
                    continue
                for (i, _), value in zip(part, scores):
                    if np.isfinite(value):
                        results[i] = MetricResult({"mos": float(value)})
                    else:
                        results[i] = MetricResult.unavailable(self.fields, Status.FAILED,
                                                              "the model gave a non-finite score")
        return results  # type: ignore[return-value]  # every slot is filled


def read_checkpoint(path: Path, model: Any) -> dict[str, Any]:
    """The state dict in `path` — the SpeechMOS `.pt`, or the UTMOS22 Lightning `.ckpt` mapped
    onto it — checked against `model`'s keys and shapes (ModelFileError naming the file)."""
    from ._utmos_model import check_state_dict, from_lightning, is_lightning_state

    state = load_torch_file(path, "utmos checkpoint")
    for wrapper in ("state_dict", "model"):  # Lightning's checkpoint dict; a training script's
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ModelFileError(f"utmos checkpoint {path} holds a {type(state).__name__}, not a state dict; "
                             f"{_how_to_get()}")
    if is_lightning_state(state):
        state = from_lightning(state, f"utmos checkpoint {path}")
    problem = check_state_dict(model, state, f"utmos checkpoint {path}")
    if problem:
        raise ModelFileError(problem)
    return state
