"""Speech → units: HuBERT features (transformers `HubertModel`, default the 25 Hz mHuBERT,
layer 11) quantised to the nearest of K k-means centroids. 16 kHz in, 25 units per second,
no de-duplication.

The k-means file may be the released km500 file (a joblib pickle of a scikit-learn
(MiniBatch)KMeans; read here without scikit-learn and without running arbitrary pickled
code), a `.npy` array of centroids (K, D), or raw float32 centroids.
"""
from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn


class _PickledEstimator:
    """Stands in for a scikit-learn estimator class while unpickling: keeps its state."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


_SAFE_BUILTINS = {"slice", "set", "frozenset", "complex", "bytearray", "range", "object", "tuple",
                  "list", "dict", "int", "float", "bool", "str", "bytes"}
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18", b"ZF")


def _kmeans_unpickler(path: Path, handle: Any) -> Any:
    from joblib.numpy_pickle import NumpyUnpickler

    class KMeansUnpickler(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            root = module.split(".")[0]
            if root == "sklearn":
                return type(name, (_PickledEstimator,), {"__module__": module})
            if root in ("numpy", "joblib", "collections", "copyreg", "_codecs") or (
                    module == "builtins" and name in _SAFE_BUILTINS):
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"k-means file {path}: refusing to load {module}.{name}")

    params = inspect.signature(NumpyUnpickler.__init__).parameters
    kwargs = {"ensure_native_byte_order": True} if "ensure_native_byte_order" in params else {}
    return KMeansUnpickler(str(path), handle, **kwargs)


def load_kmeans(path: Union[str, Path], dim: Optional[int] = None) -> np.ndarray:
    """Centroids (K, D) float32 from a km file (joblib/pickle), a .npy, or raw float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"k-means file {path} not found")
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        centroids = np.load(path, allow_pickle=False)
    elif head[:1] == b"\x80":  # a pickle stream (joblib.dump without compression writes one)
        with path.open("rb") as f:
            obj = _kmeans_unpickler(path, f).load()
        centroids = _centroids_of(obj, path)
    elif any(head.startswith(m) for m in _COMPRESSED_MAGIC):
        import joblib  # compressed joblib files: needs scikit-learn to rebuild the estimator

        centroids = _centroids_of(joblib.load(path), path)
    else:
        raw = np.fromfile(path, dtype=np.float32)
        if dim is None or raw.size % dim:
            raise ValueError(f"k-means file {path}: not a pickle or .npy, and {raw.size} float32 values "
                             f"do not make rows of {dim}")
        centroids = raw.reshape(-1, dim)
    centroids = np.asarray(centroids, dtype=np.float32)
    if centroids.ndim != 2:
        raise ValueError(f"k-means file {path}: centroids have shape {centroids.shape}, expected (K, D)")
    if dim is not None and centroids.shape[1] != dim:
        raise ValueError(f"k-means file {path}: centroids are {centroids.shape[1]}-dimensional, "
                         f"the HuBERT features {dim}-dimensional")
    return centroids


def _centroids_of(obj: Any, path: Path) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        return obj
    centers = getattr(obj, "cluster_centers_", None)
    if centers is None and isinstance(obj, dict):
        centers = obj.get("cluster_centers_", obj.get("centroids"))
    if centers is None:
        raise ValueError(f"k-means file {path}: a {type(obj).__name__} without cluster_centers_")
    return np.asarray(centers)


class SpeechTokenizer(nn.Module):
    """HuBERT + k-means: 16 kHz samples → unit ids."""

    def __init__(self, hubert: nn.Module, centroids: Union[np.ndarray, torch.Tensor], layer: int,
                 normalize: bool = False) -> None:
        super().__init__()
        n_layers = hubert.config.num_hidden_layers
        if not 0 <= layer <= n_layers:
            raise ValueError(f"HuBERT layer {layer}: the model has {n_layers} layers")
        self.hubert = hubert.eval()
        centroids = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
        if centroids.shape[1] != hubert.config.hidden_size:
            raise ValueError(f"k-means centroids are {centroids.shape[1]}-dimensional; "
                             f"HuBERT features are {hubert.config.hidden_size}")
        self.register_buffer("centroids", centroids, persistent=False)
        self.register_buffer("centroid_sq", (centroids ** 2).sum(-1), persistent=False)
        self.layer = layer
        self.normalize = normalize
        # frames = floor((samples - receptive) / stride) + 1 through the conv stack
        self.stride = int(np.prod(hubert.config.conv_stride))

    @property
    def n_units(self) -> int:
        return int(self.centroids.shape[0])

    def min_samples(self) -> int:
        n = 1
        for kernel, stride in reversed(list(zip(self.hubert.config.conv_kernel, self.hubert.config.conv_stride))):
            n = (n - 1) * stride + kernel
        return n

    @torch.inference_mode()
    def encode(self, samples: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """Mono 16 kHz samples → (T,) unit ids on the tokenizer's device."""
        param = next(self.hubert.parameters())
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(1, -1)
        if x.shape[1] < self.min_samples():
            x = torch.nn.functional.pad(x, (0, self.min_samples() - x.shape[1]))
        x = x.to(param.device)
        if self.normalize:
            x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        out = self.hubert(x.to(param.dtype), output_hidden_states=True)
        features = out.hidden_states[self.layer][0].float()
        distances = (features ** 2).sum(-1, keepdim=True) - 2 * features @ self.centroids.T + self.centroid_sq
        return distances.argmin(-1)

    def save(self, hubert_dir: Union[str, Path], kmeans_path: Union[str, Path]) -> None:
        self.hubert.save_pretrained(str(hubert_dir))
        Path(kmeans_path).parent.mkdir(parents=True, exist_ok=True)
        np.save(str(kmeans_path), self.centroids.cpu().numpy())


def load_speech_tokenizer(hubert: Union[str, Path], kmeans: Union[str, Path], layer: int,
                          normalize: bool = False) -> SpeechTokenizer:
    """`hubert`: a folder (or hub id) with a transformers HubertModel; `kmeans`: see module doc."""
    from transformers import HubertModel

    model = HubertModel.from_pretrained(str(hubert))
    centroids = load_kmeans(kmeans, dim=model.config.hidden_size)
    return SpeechTokenizer(model, centroids, layer, normalize)


def random_speech_tokenizer(hubert_shape: dict[str, Any], layer: int, n_units: int, seed: int = 0) -> SpeechTokenizer:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**hubert_shape))
    centroids = torch.randn(n_units, model.config.hidden_size).numpy()
    return SpeechTokenizer(model, centroids, layer)
