"""Speech → units: HuBERT features (transformers `HubertModel`, default the 25 Hz mHuBERT,
layer 11) quantised to the nearest of K k-means centroids. 16 kHz in, 25 units per second,
no de-duplication.

Only the layers up to the quantised one run. `GraphedSpeechTokenizer` runs the whole tokenizer
on fixed buffers (a turn padded up to a bucket length, the padding masked), one CUDA graph per
bucket on a GPU, where HuBERT is otherwise bound by launching a few hundred small kernels and
meets a new input shape with every user turn.

The k-means file may be the released km500 file (a joblib pickle of a scikit-learn
(MiniBatch)KMeans, uncompressed or compressed with any codec joblib writes: zlib, gzip, bz2,
lzma, xz, lz4; read here without scikit-learn and without running pickled code), a `.npy`
array of centroids (K, D), or raw float32 centroids (accepted only when the file is exactly
K × D float32 values, all finite, for the K and D expected). The centroids are checked: K ×
D with D the HuBERT layer's width and K the model's unit count, every value finite.

A HuBERT folder needs its config.json (without it transformers would build its default,
50 Hz HuBERT); the weights must fill every parameter; its frame rate is the tokenizer's unit
rate, which the GroupFormer model checks against its own. Every problem with these files is
a ModelFileError naming the file.
"""
from __future__ import annotations

import bz2
import gzip
import inspect
import io
import lzma
import pickle
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import numpy as np
import torch
from torch import nn

from ...errors import ModelFileError
from ...model_files import MissingModelFile, StandIn, check_file, read_json_object
from .cuda_graphs import Replay, new_pool, relative_difference

if TYPE_CHECKING:  # transformers is imported where a model is built, not with this module
    from transformers import HubertModel

SAMPLE_RATE = 16000  # HuBERT's input rate

# Frame counts the graphed tokenizer pads a turn's features up to (25 Hz: 1.3 s … 41 s).
FRAME_BUCKETS = (32, 64, 128, 256, 512, 1024)


class _PickledEstimator(StandIn):
    """Stands in for a scikit-learn estimator class while unpickling: keeps its state as
    attributes (`cluster_centers_`, `n_clusters`), runs none of its code."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


_SAFE_BUILTINS = {"slice", "set", "frozenset", "complex", "bytearray", "range", "object", "tuple",
                  "list", "dict", "int", "float", "bool", "str", "bytes"}
# numpy and joblib globals an array or a scikit-learn estimator's state needs (other numpy names,
# e.g. a RandomState, become inert stand-ins; anything outside numpy, joblib and sklearn is refused).
_SAFE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                 ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                 ("numpy._core.multiarray", "scalar"), ("joblib.numpy_pickle", "NumpyArrayWrapper"),
                 ("collections", "OrderedDict"), ("copyreg", "_reconstructor"), ("_codecs", "encode")}
# How each codec joblib.dump(compress=…) writes begins (joblib's compressor prefixes).
_CODECS = ((b"\x78", "zlib"), (b"\x1f\x8b", "gzip"), (b"BZ", "bz2"), (b"\xfd7zXZ", "xz"),
           (b"]\x00", "lzma"), (b"\x04\x22\x4d\x18", "lz4"))


def _kmeans_unpickler(path: Path, handle: Any) -> Any:
    from joblib.numpy_pickle import NumpyUnpickler

    class KMeansUnpickler(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            root = module.split(".")[0]
            if (module, name) in _SAFE_GLOBALS or (module == "builtins" and name in _SAFE_BUILTINS):
                return super().find_class(module, name)
            if root in ("sklearn", "numpy"):
                return type(name, (_PickledEstimator,), {"__module__": module, "__qualname__": name})
            raise pickle.UnpicklingError(f"k-means file {path}: refusing to load {module}.{name}")

    params = inspect.signature(NumpyUnpickler.__init__).parameters
    kwargs = {"ensure_native_byte_order": True} if "ensure_native_byte_order" in params else {}
    return KMeansUnpickler(str(path), handle, **kwargs)


def _decompress(codec: str, data: bytes) -> bytes:
    if codec == "zlib":
        return zlib.decompress(data)
    if codec == "gzip":
        return gzip.decompress(data)
    if codec == "bz2":
        return bz2.decompress(data)
    if codec in ("xz", "lzma"):
        return lzma.decompress(data)  # FORMAT_AUTO: both the xz and the legacy lzma container
    try:
        import lz4.frame
    except ImportError:
        raise ModelFileError("is lz4-compressed: install the lz4 package to read it") from None
    return lz4.frame.decompress(data)


def _raw_centroids(data: bytes, dim: Optional[int], n_clusters: Optional[int]) -> Optional[np.ndarray]:
    """`data` as raw float32 centroids, only when it is exactly n_clusters × dim finite values."""
    if dim is None or n_clusters is None or len(data) != 4 * dim * n_clusters:
        return None
    raw = np.frombuffer(data, dtype="<f4").reshape(n_clusters, dim)
    return raw.copy() if np.all(np.isfinite(raw)) else None


def _unpickle_kmeans(data: bytes, path: Path) -> np.ndarray:
    try:
        obj = _kmeans_unpickler(path, io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise ModelFileError(str(exc) if str(exc).startswith("k-means file") else
                             f"k-means file {path} is not a readable pickle ({exc})") from None
    except Exception as exc:  # a truncated stream ends in EOFError, ValueError, struct.error…
        raise ModelFileError(f"k-means file {path} cannot be unpickled: {type(exc).__name__}: {exc} "
                             "(truncated?)") from None
    return _centroids_of(obj, path)


def _read_kmeans(data: bytes, path: Path, dim: Optional[int], n_clusters: Optional[int]) -> np.ndarray:
    if data.startswith(b"\x93NUMPY"):
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:  # a truncated header or body, or an object array
            raise ModelFileError(f"k-means file {path} is a broken .npy: {type(exc).__name__}: {exc}") from None
    codec = next((name for magic, name in _CODECS if data.startswith(magic)), None)
    if data[:1] == b"\x80" or codec is not None:
        try:
            stream = data if codec is None else _decompress(codec, data)
        except ModelFileError as exc:
            raise ModelFileError(f"k-means file {path} {exc}") from None
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            raw = _raw_centroids(data, dim, n_clusters)  # raw floats that happen to start like a codec
            if raw is not None:
                return raw
            raise ModelFileError(f"k-means file {path} looks {codec}-compressed (a joblib dump) but does not "
                                 f"decompress: {exc} (truncated?)") from None
        return _unpickle_kmeans(stream, path)
    raw = _raw_centroids(data, dim, n_clusters)
    if raw is None:
        if dim is None or n_clusters is None:
            raise ModelFileError(f"k-means file {path} is not a joblib/pickle file or a .npy array (raw float32 "
                                 "centroids are read only when the number of clusters and dimensions is known)")
        size = 4 * n_clusters * dim
        found = "holds NaN or infinite values" if len(data) == size else f"has {len(data)} bytes"
        raise ModelFileError(f"k-means file {path} is not a joblib/pickle file or a .npy array, nor raw float32 "
                             f"centroids ({n_clusters} × {dim} finite values, {size} bytes): it {found}")
    return raw


def load_kmeans(path: Union[str, Path], dim: Optional[int] = None, n_clusters: Optional[int] = None) -> np.ndarray:
    """Centroids (K, D) float32 from a km file (joblib/pickle, any joblib compression), a .npy,
    or raw float32; checked to be finite and K × D for the `n_clusters` and `dim` given."""
    path = check_file(path, "k-means file")
    centroids = _read_kmeans(path.read_bytes(), path, dim, n_clusters)
    if centroids.dtype.kind not in "fiu":
        raise ModelFileError(f"k-means file {path}: centroids of dtype {centroids.dtype}, expected numbers")
    centroids = np.asarray(centroids, dtype=np.float32)
    if centroids.ndim != 2 or centroids.shape[0] == 0:
        raise ModelFileError(f"k-means file {path}: centroids have shape {centroids.shape}, expected (K, D)")
    if dim is not None and centroids.shape[1] != dim:
        raise ModelFileError(f"k-means file {path}: centroids are {centroids.shape[1]}-dimensional, "
                             f"the HuBERT features {dim}-dimensional")
    if n_clusters is not None and centroids.shape[0] != n_clusters:
        raise ModelFileError(f"k-means file {path}: {centroids.shape[0]} centroids, but the model has "
                             f"{n_clusters} units")
    if not np.all(np.isfinite(centroids)):
        raise ModelFileError(f"k-means file {path}: {int((~np.isfinite(centroids)).sum())} centroid values "
                             "are NaN or infinite")
    return centroids


def _centroids_of(obj: Any, path: Path) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        return obj
    centers = getattr(obj, "cluster_centers_", None)
    if centers is None and isinstance(obj, dict):
        centers = obj.get("cluster_centers_", obj.get("centroids"))
    if centers is None:
        raise ModelFileError(f"k-means file {path}: a {type(obj).__name__} without cluster_centers_")
    centers = np.asarray(centers)
    declared = getattr(obj, "n_clusters", None)
    if isinstance(declared, int) and centers.ndim == 2 and centers.shape[0] != declared:
        raise ModelFileError(f"k-means file {path}: n_clusters is {declared} but cluster_centers_ has "
                             f"{centers.shape[0]} rows")
    return centers


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

    centroids: torch.Tensor  # (K, D) buffer
    centroid_sq: torch.Tensor  # (K,) buffer: each centroid's squared norm

    def __init__(self, hubert: HubertModel, centroids: Union[np.ndarray, torch.Tensor], layer: int,
                 normalize: bool = False, source: str = "speech tokenizer") -> None:
        super().__init__()
        n_layers = hubert.config.num_hidden_layers
        if not 0 <= layer <= n_layers:
            raise ModelFileError(f"{source}: HuBERT layer {layer} is asked for; the model has {n_layers} layers")
        self.hubert = hubert.eval()
        centroids = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
        if centroids.ndim != 2 or centroids.shape[1] != hubert.config.hidden_size:
            raise ModelFileError(f"{source}: k-means centroids of shape {tuple(centroids.shape)}; HuBERT "
                                 f"features are {hubert.config.hidden_size}-dimensional")
        self.register_buffer("centroids", centroids, persistent=False)
        self.register_buffer("centroid_sq", (centroids ** 2).sum(-1), persistent=False)
        self.layer = layer
        self.normalize = normalize
        self.source = source  # the files it came from, for error messages

    @property
    def n_units(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def frame_rate(self) -> float:
        """Units per second: 16 kHz over the conv stack's total stride (25 for mHuBERT 25 Hz,
        50 for the original HuBERT)."""
        return SAMPLE_RATE / float(np.prod(self.hubert.config.conv_stride))

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


def _local_hubert(path: Path) -> HubertModel:
    from transformers import HubertModel

    if not path.is_dir():
        raise ModelFileError(f"HuBERT {path} is a file; give the folder that holds config.json and the weights")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise MissingModelFile(f"HuBERT folder {path} has no config.json: without it transformers would build "
                               "its default HuBERT (50 Hz, not the model's); copy the model's config.json there")
    config = read_json_object(config_path, "HuBERT config")
    if config.get("model_type", "hubert") != "hubert":
        raise ModelFileError(f"HuBERT config {config_path} is for model_type {config['model_type']!r}, not hubert")
    weights = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
    if not any((path / name).is_file() for name in weights):
        raise MissingModelFile(f"HuBERT folder {path} has no weights ({' or '.join(weights[:2])})")
    try:
        # transformers annotates from_pretrained as returning the model; with output_loading_info it
        # returns (model, loading info).
        model, info = cast(tuple["HubertModel", dict[str, list[Any]]],
                           HubertModel.from_pretrained(str(path), output_loading_info=True))
    except Exception as exc:  # transformers reports bad weights as OSError, RuntimeError, SafetensorError…
        raise ModelFileError(f"HuBERT folder {path} cannot be loaded: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''} "
                             "(truncated weights, or weights of another shape than config.json says?)") from None
    missing = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
    if missing:  # transformers would fill them with random weights and only warn
        raise ModelFileError(f"HuBERT folder {path}: the weights lack {len(missing)} parameters of the model "
                             f"config.json describes ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
    return model


def load_hubert(hubert: Union[str, Path]) -> HubertModel:
    """A transformers HubertModel from a local folder (checked: config.json, weights that fill
    every parameter) or, where the machine has network, a Hugging Face hub id."""
    from transformers import HubertModel

    path = Path(hubert).expanduser()
    if path.exists():
        return _local_hubert(path)
    name = str(hubert)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):  # e.g. slprl/mhubert-base-25hz
        try:
            return HubertModel.from_pretrained(name)
        except Exception as exc:  # offline, a wrong id, a broken download
            raise ModelFileError(f"HuBERT {name!r} is not a local folder and cannot be fetched from the hub "
                                 f"({type(exc).__name__}); give hubert=/path/to/folder") from None
    raise MissingModelFile(f"HuBERT folder {path} not found")


def load_speech_tokenizer(hubert: Union[str, Path], kmeans: Union[str, Path], layer: int,
                          normalize: bool = False, n_units: Optional[int] = None) -> SpeechTokenizer:
    """`hubert`: a folder (or hub id) with a transformers HubertModel; `kmeans`: see module doc.
    `n_units`: the number of centroids the k-means file must hold (the model's unit count)."""
    model = load_hubert(hubert)
    centroids = load_kmeans(kmeans, dim=model.config.hidden_size, n_clusters=n_units)
    return SpeechTokenizer(model, centroids, layer, normalize, source=f"HuBERT {hubert} with k-means {kmeans}")


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
    def prepare(self) -> GraphedSpeechTokenizer:
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
