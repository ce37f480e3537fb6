"""Speech → units: HuBERT features (transformers `HubertModel`, default the 25 Hz mHuBERT,
layer 11) quantised to the nearest of K k-means centroids. 16 kHz in, 25 units per second,
no de-duplication.

Only the layers up to the quantised one run. `GraphedSpeechTokenizer` runs the whole tokenizer
on fixed buffers (a turn padded up to a bucket length, the padding masked), one CUDA graph per
bucket on a GPU, where HuBERT is otherwise bound by launching a few hundred small kernels and
meets a new input shape with every user turn.

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

from .cuda_graphs import Replay, new_pool, relative_difference

# Frame counts the graphed tokenizer pads a turn's features up to (25 Hz: 1.3 s … 41 s).
FRAME_BUCKETS = (32, 64, 128, 256, 512, 1024)


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


def _masked_group_norm(norm: nn.GroupNorm, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`norm(x)` for x (B, C, T) with statistics over the positions where `keep` (T,) is True."""
    b, c, t = x.shape
    grouped = x.reshape(b, norm.num_groups, c // norm.num_groups, t)
    weight = keep.to(x.dtype)
    count = weight.sum() * (c // norm.num_groups)
    mean = (grouped * weight).sum((2, 3), keepdim=True) / count
    var = (((grouped - mean) ** 2) * weight).sum((2, 3), keepdim=True) / count
    out = ((grouped - mean) * torch.rsqrt(var + norm.eps)).reshape(b, c, t)
    if norm.affine:
        out = out * norm.weight[:, None] + norm.bias[:, None]
    return out


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

    @property
    def n_units(self) -> int:
        return int(self.centroids.shape[0])

    def samples_for(self, frames: int) -> int:
        """The fewest samples that give `frames` frames through the conv stack."""
        n = frames
        for kernel, stride in reversed(list(zip(self.hubert.config.conv_kernel, self.hubert.config.conv_stride))):
            n = (n - 1) * stride + kernel
        return n

    def frames_of(self, samples: Any) -> Any:
        """Frames the conv stack makes of `samples` (an int, or a device tensor: no host sync)."""
        for kernel, stride in zip(self.hubert.config.conv_kernel, self.hubert.config.conv_stride):
            samples = (samples - kernel) // stride + 1
        return samples

    def input_samples(self, samples: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """Mono 16 kHz samples as HuBERT's input (1, n), float32 on the host, at least one frame long."""
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(1, -1)
        shortest = self.samples_for(1)
        return torch.nn.functional.pad(x, (0, shortest - x.shape[1])) if x.shape[1] < shortest else x

    def conv_features(self, samples: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """Mono 16 kHz samples → the encoder's input (1, frames, hidden): conv features, projected."""
        param = next(self.hubert.parameters())
        x = self.input_samples(samples).to(device=param.device, dtype=param.dtype)
        if self.normalize:
            x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        features = self.hubert.feature_extractor(x).transpose(1, 2)
        return self.hubert.feature_projection(features)

    def padded_conv_features(self, x: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`conv_features` of the first `samples` (a device scalar) of `x` (1, S), computed over
        all S positions: the input normalisation and the group normalisation of the base layout's
        first conv layer take their statistics over the real part only, and every other step is
        local or per position, so the first `frames_of(samples)` frames are those of the
        unpadded input. Returns (features (1, frames_of(S), hidden), real frames)."""
        if self.normalize:
            keep = (torch.arange(x.shape[1], device=x.device) < samples).to(x.dtype)
            mean = (x * keep).sum() / samples
            x = (x - mean) / torch.sqrt((((x - mean) * keep) ** 2).sum() / (samples - 1) + 1e-7)
        hidden = x[:, None]
        frames = samples
        config = self.hubert.config
        for layer, kernel, stride in zip(self.hubert.feature_extractor.conv_layers, config.conv_kernel,
                                         config.conv_stride):
            frames = (frames - kernel) // stride + 1
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):  # statistics over time: real frames only
                out = layer.conv(hidden)
                keep = torch.arange(out.shape[-1], device=out.device) < frames
                hidden = layer.activation(_masked_group_norm(norm, out, keep))
            else:  # conv, per-frame layer norm, activation: padding cannot reach the real frames
                hidden = layer(hidden)
        return self.hubert.feature_projection(hidden.transpose(1, 2)), frames

    def layer_features(self, hidden: torch.Tensor, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The encoder up to `layer` (what `hidden_states[layer]` of the whole model holds).
        `keep` (frames,) bool marks real frames in a padded input: padded frames are zeroed before
        the positional convolution (as its own zero padding would be) and never attended to, so
        the real frames' features are those of the unpadded input."""
        encoder = self.hubert.encoder
        mask = None
        if keep is not None:
            hidden = hidden * keep[None, :, None].to(hidden.dtype)
            blocked = (~keep).to(hidden.dtype) * torch.finfo(hidden.dtype).min
            mask = blocked[None, None, None, :]  # (1, 1, 1, frames): the same keys for every query
        hidden = hidden + encoder.pos_conv_embed(hidden)
        # Base layout: normalised before the layers. Large (stable) layout: pre-norm layers whose
        # outputs are quantised as they are (the encoder's final norm belongs to its last output).
        if not getattr(self.hubert.config, "do_stable_layer_norm", False):
            hidden = encoder.layer_norm(hidden)
        for block in encoder.layers[: self.layer]:
            out = block(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out  # transformers 4 returns a tuple
        return hidden

    def nearest_units(self, features: torch.Tensor) -> torch.Tensor:
        """(frames, D) features → (frames,) ids of the nearest centroids."""
        features = features.float()
        distances = (features ** 2).sum(-1, keepdim=True) - 2 * features @ self.centroids.T + self.centroid_sq
        return distances.argmin(-1)

    @torch.inference_mode()
    def encode(self, samples: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """Mono 16 kHz samples → (T,) unit ids on the tokenizer's device."""
        return self.nearest_units(self.layer_features(self.conv_features(samples))[0])

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


class GraphedSpeechTokenizer:
    """A SpeechTokenizer run whole — conv stack, encoder layers, k-means look-up — on fixed
    buffers: a turn's samples are padded up to the length of a frame bucket, the padding kept
    out of every statistic and every attention (`padded_conv_features`, `layer_features`), and
    each bucket is captured as one CUDA graph on CUDA (called directly elsewhere). Turns longer
    than the largest bucket run op by op, and so does every turn where HuBERT's attention is
    neither sdpa nor eager (the two that take the padding mask). Same `encode` as
    SpeechTokenizer."""

    def __init__(self, tokenizer: SpeechTokenizer, buckets: tuple[int, ...] = FRAME_BUCKETS,
                 capture: Optional[bool] = None) -> None:
        attention = getattr(tokenizer.hubert.config, "_attn_implementation", None) or "eager"
        self.tokenizer = tokenizer
        self.buckets = tuple(sorted(buckets)) if attention in ("sdpa", "eager") else ()
        self.device = tokenizer.centroids.device
        self.capture = self.device.type == "cuda" if capture is None else bool(capture)
        self._pool = new_pool(self.capture)
        self._samples = torch.zeros(1, dtype=torch.long, device=self.device)  # real samples in this call
        self._calls: dict[int, tuple[Replay, torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # x, features, units

    @property
    def n_units(self) -> int:
        return self.tokenizer.n_units

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Layer features (1, frames, D) of the first `_samples` samples of the padded `x`; the
        frames past the real ones hold garbage."""
        hidden, frames = self.tokenizer.padded_conv_features(x, self._samples)
        keep = torch.arange(hidden.shape[1], device=self.device) < frames
        return self.tokenizer.layer_features(hidden, keep)

    def _call(self, frames: int) -> tuple[Replay, torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self._calls.get(frames)
        if found is None:
            param = next(self.tokenizer.hubert.parameters())
            samples = self.tokenizer.samples_for(frames + 1) - 1  # the most that make `frames` frames
            x = torch.zeros(1, samples, dtype=param.dtype, device=self.device)
            features = torch.zeros(1, frames, self.tokenizer.hubert.config.hidden_size, dtype=param.dtype,
                                   device=self.device)
            units = torch.zeros(frames, dtype=torch.long, device=self.device)

            def body() -> None:
                features.copy_(self.features(x))
                units.copy_(self.tokenizer.nearest_units(features[0]))

            self._samples.fill_(samples)
            found = self._calls[frames] = (Replay(body, self.capture, self._pool), x, features, units)
        return found

    @torch.inference_mode()
    def prepare(self) -> "GraphedSpeechTokenizer":
        """Capture every bucket now (model load), not in a measured turn."""
        for frames in self.buckets:
            self._call(frames)
        return self

    def _run(self, samples: Union[np.ndarray, torch.Tensor]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(features, units) of a turn through its bucket's graph, or None past the largest bucket."""
        x = self.tokenizer.input_samples(samples)
        n = x.shape[1]
        frames = self.tokenizer.frames_of(n)
        bucket = next((b for b in self.buckets if b >= frames), None)
        if bucket is None:
            return None
        call, x_in, features, units = self._call(bucket)
        x_in[:, :n].copy_(x)  # straight from the host into the graph's buffer
        self._samples.fill_(n)
        call()
        return features[:, :frames], units[:frames]

    @torch.inference_mode()
    def encode(self, samples: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        found = self._run(samples)
        return self.tokenizer.encode(samples) if found is None else found[1].clone()

    @torch.inference_mode()
    def verify(self, seconds: float = 1.5, tolerance: float = 1e-3) -> float:
        """Features of a fixed noise turn through the graph against op by op: the relative
        difference (AssertionError beyond `tolerance`; float32 rounding is ~1e-6, a wrong mask or
        statistic is off by the order of the features)."""
        samples = (0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds))).astype(np.float32)
        found = self._run(samples)
        if found is None:
            return 0.0
        exact = self.tokenizer.layer_features(self.tokenizer.conv_features(samples))
        difference = relative_difference(found[0], exact)
        if not difference <= tolerance:
            raise AssertionError(f"graphed speech tokenizer differs from op by op by {difference:.3g} "
                                 f"(tolerance {tolerance})")
        return difference
