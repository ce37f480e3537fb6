"""DistillMOS (Stahl & Gamper, 2025): a small CNN-Transformer distilled from an XLS-R quality
model, with the weights the `distillmos` package ships.

The model scores 7.68 s crops: a shorter clip is zero-padded to one crop, a longer one is cut
into evenly spaced crops (at most 1 s apart) whose scores are averaged. This metric makes the
crops itself, exactly as the package's `forward` does, so the crops of every item in a batch
go through the network together (`batch_size` crops at a time) instead of one clip at a time.

`distillmos` imports torchaudio at module level but uses it only in its command-line reader;
where torchaudio is missing (its wheels pin an exact torch version) a stand-in is lent for
that import only.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..base import FieldInfo, Metric, MetricResult, Need, ScoreItem, ScoringContext
from ...cache import sha256_file
from ...provenance import package_version
from ._common import INSTALL, SAMPLE_RATE, check_batch_size, failed, reply_16k, require


# Their declared torchaudio dependency pins a torch other than the one installed: no deps.
_NO_DEPS = f"{INSTALL} && pip install --no-deps distillmos xls-r-sqa"


def _import_distillmos_sqa() -> Any:
    require("torch", "distillmos")
    require("xls_r_sqa", "distillmos", dist="xls-r-sqa", hint=_NO_DEPS)
    if "distillmos.sqa" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        return require("distillmos.sqa", "distillmos", dist="distillmos", hint=_NO_DEPS)
    stand_in = types.ModuleType("torchaudio")
    stand_in.__doc__ = "ivbench stand-in: torchaudio is not installed"
    sys.modules["torchaudio"] = stand_in
    try:
        return require("distillmos.sqa", "distillmos", dist="distillmos", hint=_NO_DEPS)
    finally:
        if sys.modules.get("torchaudio") is stand_in:
            del sys.modules["torchaudio"]


def crops(samples: np.ndarray, seq_len: int, max_hop: int) -> np.ndarray:
    """The model's crops of one clip, as its own segmenting makes them ([n, seq_len])."""
    over = len(samples) - seq_len
    if over < 0:
        samples = np.pad(samples, (0, -over))
        over = 0
    n = int(np.ceil(over / max_hop)) + 1
    return np.stack([samples[int(c * over):int(c * over) + seq_len] for c in np.linspace(0, 1, n)])


class DistillMOS(Metric):
    name = "distillmos"
    description = "DistillMOS speech quality MOS of the reply's speech (distillmos package weights, torch)"
    needs = frozenset({Need.REPLY_AUDIO})
    uses_gpu = True
    fields = {"mos": FieldInfo(True, "MOS 1-5", "DistillMOS predicted overall quality")}

    def __init__(self, batch_size: int = 8, **options: Any) -> None:
        check_batch_size(self.name, batch_size)
        super().__init__(**options)  # batch size does not change the numbers: not in identity
        self.batch_size = batch_size
        self.device = "cpu"
        self._model: Any = None
        self._sqa: Any = None
        self._identity: Optional[dict[str, Any]] = None
        self._lock = threading.Lock()

    def load(self, context: Optional[ScoringContext] = None) -> None:
        with self._lock:
            if self._model is not None:
                return
            import torch

            sqa = _import_distillmos_sqa()
            model = sqa.ConvTransformerSQAModel(load_weights=False, segmenting_in_forward=False)
            state = torch.load(sqa.DEFAULT_WEIGHTS_CHKPT, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            self.device = (context.device if context is not None else None) or "cpu"
            self._model = model.eval().to(self.device)
            self._sqa = sqa

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            sqa = _import_distillmos_sqa()
            self._identity = {**super().identity(), "distillmos": package_version("distillmos"),
                              "weights": sha256_file(Path(sqa.DEFAULT_WEIGHTS_CHKPT))[:16],
                              "sample_rate": SAMPLE_RATE}
        return self._identity

    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return {"audio": item.reply_audio_sha256()}

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            return self._model(x).reshape(-1).float().cpu().numpy()

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        self.load()
        results: list[Optional[MetricResult]] = [None] * len(items)
        owners: list[int] = []  # item index of each crop
        pieces: list[np.ndarray] = []
        for i, item in enumerate(items):
            try:
                c = crops(reply_16k(item), self._sqa.SEQ_LEN, self._sqa.MAX_HOP_LEN)
            except Exception as exc:
                results[i] = failed(self.fields, exc)
                continue
            pieces.append(c)
            owners.extend([i] * len(c))
        if pieces:
            all_crops = np.concatenate(pieces).astype(np.float32, copy=False)
            scores = np.empty(len(all_crops), dtype=np.float64)
            try:
                for s in range(0, len(all_crops), self.batch_size):
                    scores[s:s + self.batch_size] = self._forward(all_crops[s:s + self.batch_size])
            except Exception as exc:  # a model error fails the batch's items, with the reason
                for i in set(owners):
                    results[i] = failed(self.fields, exc)
                return results  # type: ignore[return-value]  # every slot is filled
            owner = np.asarray(owners)
            for i in sorted(set(owners)):
                mine = scores[owner == i]
                results[i] = MetricResult({"mos": float(mine.mean())}, details={"crops": int(len(mine))})
        return results  # type: ignore[return-value]  # every slot is filled
