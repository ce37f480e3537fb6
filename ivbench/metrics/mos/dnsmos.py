"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 of the reply's speech, from speechmos' ONNX models.

Options:

- `backend`: "fast" (default) computes speechmos' numbers with the windows of a clip sharing
  their work (see `_dnsmos_engine`; needs onnx); "speechmos" calls `speechmos.dnsmos.run`
  as it is (needs librosa).
- `personalized`: the personalised DNSMOS model (speechmos' "dnsmos_personalized"), which
  does not penalise interfering talkers as noise.
- `workers`: clips scored at the same time (0: one per core; backend "fast" only). A clip's
  network runs are too small to keep every core busy alone; clips side by side do.
- `threads`: onnxruntime intra-op threads per clip (0: the cores shared among the workers).

`workers` and `threads` change the speed, never the numbers (tests/test_mos.py).
"""
from __future__ import annotations

import os
import threading
from typing import Any, Optional

from ..base import FieldInfo, Metric, MetricResult, Need, ScoreItem, ScoringContext
from ...cache import sha256_file
from ...provenance import package_version
from ._common import SAMPLE_RATE, reply_16k, require, score_each

BACKENDS = ("fast", "speechmos")


class DNSMOS(Metric):
    name = "dnsmos"
    description = "DNSMOS P.835 SIG/BAK/OVRL and P.808 MOS of the reply's speech (speechmos ONNX models)"
    needs = frozenset({Need.REPLY_AUDIO})
    uses_gpu = False
    fields = {
        "sig": FieldInfo(True, "MOS 1-5", "P.835 speech signal quality"),
        "bak": FieldInfo(True, "MOS 1-5", "P.835 background noise (higher: less intrusive)"),
        "ovrl": FieldInfo(True, "MOS 1-5", "P.835 overall quality"),
        "p808": FieldInfo(True, "MOS 1-5", "P.808 overall quality (DNSMOS P.808 model)"),
    }

    option_help = {
        "backend": "fast (default: speechmos' numbers, the windows of a clip sharing their work) "
                   "or speechmos (speechmos.dnsmos.run itself; needs librosa)",
        "personalized": "true: the personalised DNSMOS model (interfering talkers are not noise)",
        "workers": "clips scored at the same time; default 0: one per core (speed only)",
        "threads": "onnxruntime threads per clip; default 0: the cores shared among the workers (speed only)",
    }

    def __init__(self, backend: str = "fast", personalized: bool = False, workers: int = 0,
                 threads: int = 0) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"dnsmos backend {backend!r}: use one of {', '.join(BACKENDS)}")
        for name, value in (("workers", workers), ("threads", threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"dnsmos {name}={value!r}: give an integer, 0 for the default")
        if not isinstance(personalized, bool):  # bool("no") is True: "no" would pick the other model
            raise ValueError(f"dnsmos personalized={personalized!r}: give true or false")
        # workers and threads change the speed, not the numbers: they stay out of the identity.
        super().__init__(backend=backend, personalized=bool(personalized))
        self.backend = backend
        self.personalized = bool(personalized)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = 1 if backend == "speechmos" else (workers or cores)
        self.threads = threads or max(1, cores // self.workers)
        self._engine: Any = None
        self._identity: Optional[dict[str, Any]] = None
        self._lock = threading.Lock()

    def load(self, context: Optional[ScoringContext] = None) -> None:
        with self._lock:
            if self._engine is not None:
                return
            require("onnxruntime", self.name)
            require("speechmos", self.name)
            if self.backend == "speechmos":
                require("librosa", self.name, hint="pip install librosa")
                from ._dnsmos_engine import speechmos_scores

                self._engine = lambda samples: speechmos_scores(samples, self.personalized)
            else:
                require("onnx", self.name)
                from ._dnsmos_engine import FastDNSMOS

                self._engine = FastDNSMOS(self.personalized, threads=self.threads)

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            require("speechmos", self.name)
            from ._dnsmos_engine import model_paths

            primary, p808 = model_paths(self.personalized)
            self._identity = {
                **super().identity(),
                "speechmos": package_version("speechmos"),
                "models": {f"{p.parent.name}/{p.name}": sha256_file(p)[:16] for p in (primary, p808)},
                "sample_rate": SAMPLE_RATE,
            }
        return self._identity

    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return {"audio": item.reply_audio_sha256()}

    def _score_one(self, item: ScoreItem) -> MetricResult:
        out = self._engine(reply_16k(item))
        return MetricResult({k: out[k] for k in self.fields}, details={"windows": out["windows"]})

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        self.load()
        if self.workers < 2 or len(items) < 2:
            return score_each(items, self.fields, self._score_one)
        from concurrent.futures import ThreadPoolExecutor

        # The engine holds no per-clip state and onnxruntime sessions take concurrent runs.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda item: score_each([item], self.fields, self._score_one)[0], items))
