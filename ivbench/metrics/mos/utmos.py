"""UTMOS: the UTMOS22 strong learner (SaruLab, VoiceMOS Challenge 2022), predicted naturalness.

No package registry ships its weights. Give the released checkpoint
`utmos22_strong_step7459_v1.pt` (the SpeechMOS state dict of the UTMOS22 strong learner):

- `checkpoint=/path/to/utmos22_strong_step7459_v1.pt`: a local file;
- `checkpoint=download` (or an http(s) URL): fetched once with `torch.hub` into its cache
  (`~/.cache/torch/hub/checkpoints`), where the machine has network;
- no checkpoint: the file in torch.hub's cache, if an earlier download put it there.

The architecture is written out in `_utmos_model` so that the released file loads strictly.
Clips are scored one length at a time (the model's first group norm and its BLSTM see the
whole clip, so padding would change the score); clips of equal length share a batch.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..base import FieldInfo, Metric, MetricResult, Need, ScoreItem, ScoringContext, Status
from ...cache import sha256_file
from ...errors import ModelFileError
from ._common import SAMPLE_RATE, check_batch_size, failed, reply_16k, require

RELEASE_URL = "https://github.com/tarepan/SpeechMOS/releases/download/v1.0.0/utmos22_strong_step7459_v1.pt"
FILE_NAME = "utmos22_strong_step7459_v1.pt"


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
                "options": self.options}

    def load(self, context: Optional[ScoringContext] = None) -> None:
        with self._lock:
            if self._model is not None:
                return
            torch = require("torch", self.name)
            from ._utmos_model import UTMOS22Strong, check_state_dict

            path = self.checkpoint_path()
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ValueError(f"utmos checkpoint {path} cannot be read by torch.load ({exc}); "
                                 f"{_how_to_get()}") from None
            for wrapper in ("state_dict", "model"):  # a state dict saved inside a training dict
                if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                    state = state[wrapper]
            if not isinstance(state, dict):
                raise ValueError(f"utmos checkpoint {path} holds a {type(state).__name__}, not a state dict")
            model = UTMOS22Strong()
            problem = check_state_dict(model, state, str(path))
            if problem:
                raise ValueError(problem)
            model.load_state_dict(state, strict=True)
            self.device = (context.device if context is not None else None) or "cpu"
            self._model = model.eval().to(self.device)

    # -- scoring ---------------------------------------------------------------------------
    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return {"audio": item.reply_audio_sha256()}

    def predict(self, waves: np.ndarray) -> np.ndarray:
        """MOS of a [batch, samples] float32 array of 16 kHz clips of one length."""
        import torch

        self.load()
        with torch.inference_mode():
            out = self._model(torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        from ._utmos_model import MIN_SAMPLES

        self.load()
        results: list[Optional[MetricResult]] = [None] * len(items)
        by_length: dict[int, list[tuple[int, np.ndarray]]] = {}
        for i, item in enumerate(items):
            try:
                wave = reply_16k(item)
            except Exception as exc:
                results[i] = failed(self.fields, exc)
                continue
            if len(wave) < MIN_SAMPLES:
                results[i] = MetricResult.unavailable(
                    self.fields, Status.MISSING,
                    f"reply audio is {1000 * len(wave) / SAMPLE_RATE:.0f} ms; UTMOS needs at least "
                    f"{1000 * MIN_SAMPLES / SAMPLE_RATE:.0f} ms")
                continue
            by_length.setdefault(len(wave), []).append((i, wave))
        for group in by_length.values():
            for s in range(0, len(group), self.batch_size):
                part = group[s:s + self.batch_size]
                try:
                    scores = self.predict(np.stack([w for _, w in part]))
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
