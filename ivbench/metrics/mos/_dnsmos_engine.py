"""DNSMOS P.835 from speechmos' ONNX files, with the 9 s windows of one file sharing their work.

speechmos scores a clip by sliding a 9.01 s window with a 1 s hop and running the whole
primary network (and librosa's mel spectrogram for P.808) on every window, so each second of
audio is processed about nine times. This module computes the same numbers with less work:

- The primary network is a frame-wise log-power STFT, a stack of 3x3 "same" convolutions,
  2x2 max-pools, a global max and a small dense head. Everything before the first max-pool is
  shift-equivariant in time except near a window's two edges, where the convolutions see the
  window's zero padding instead of the neighbouring audio. So that part (about 95% of the
  cost) runs once over the whole clip, in chunks, and each window takes its rows from it;
  the few rows at each window edge that differ (one per 3x3 convolution) are recomputed from
  a short strip of the window's own edge frames, which sees the same zero padding the window
  sees. The window starts 100 frames apart, so the first 2x2 pool lines up for every window.
  The rest of the network runs per window, batched.
- The P.808 mel spectrogram is computed once per frame of the clip; only each window's first
  and last frame (which touch the window's zero padding) and its dB reference (the window's
  own maximum) are per window. numpy replaces librosa (same window, FFT and Slaney mel
  filters), so numba's start-up cost is gone too.

Windows are chosen exactly as speechmos chooses them, including the windows it drops because
its floating-point end index falls one sample short. The model graph is checked when it is
split, and tests compare the result with speechmos itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ...errors import ModelFileError

SR = 16000
INPUT_LENGTH = 9.01  # seconds, speechmos' window
WINDOW_SAMPLES = int(INPUT_LENGTH * SR)  # 144160
HOP_SAMPLES = SR  # 1 s between windows
FRAME, FRAME_HOP = 320, 160  # the primary network's framing
MEL_NFFT, MEL_HOP, N_MELS = 321, 160, 120  # speechmos' P.808 features (librosa melspectrogram)
P808_SAMPLES = WINDOW_SAMPLES - 160  # speechmos feeds audio_seg[:-160] to the mel spectrogram
P808_FRAMES = 1 + (P808_SAMPLES - 1) // MEL_HOP  # centred frames (900)

# Third-order (personalised) and second-order calibration polynomials of DNSMOS P.835 from
# the raw network outputs to MOS, highest power first (DNS Challenge's published values).
POLYFIT: dict[bool, dict[str, tuple[float, ...]]] = {
    False: {"sig": (-0.08397278, 1.22083953, 0.0052439),
            "bak": (-0.13166888, 1.60915514, -0.39604546),
            "ovrl": (-0.06766283, 1.11546468, 0.04602535)},
    True: {"sig": (-0.01019296, 0.02751166, 1.19576786, -0.24348726),
           "bak": (-0.04976499, 0.44276479, -0.1644611, 0.96883132),
           "ovrl": (-0.00533021, 0.005101, 1.18058466, -0.11236046)},
}


def model_paths(personalized: bool) -> tuple[Path, Path]:
    """speechmos' primary (SIG/BAK/OVRL) and P.808 ONNX files, found without importing it
    (its module imports librosa)."""
    import importlib.util

    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("speechmos is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    primary = root / ("pdnsmos_models" if personalized else "dnsmos_models") / "sig_bak_ovr.onnx"
    p808 = root / "dnsmos_models" / "model_v8.onnx"
    for path in (primary, p808):
        if not path.is_file():
            raise FileNotFoundError(f"speechmos is installed but {path} is missing; reinstall speechmos")
    return primary, p808


def prepare(samples: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The audio speechmos scores (repeated up to one window) and the start sample of each
    window it keeps, reproducing its arithmetic exactly."""
    audio = np.asarray(samples, dtype=np.float32)
    if audio.size == 0:
        raise ValueError("empty audio")
    while len(audio) < WINDOW_SAMPLES:
        audio = np.append(audio, audio)
    num_hops = int(np.floor(len(audio) / SR) - INPUT_LENGTH) + 1
    starts = []
    for idx in range(num_hops):
        start, end = int(idx * HOP_SAMPLES), int((idx + INPUT_LENGTH) * HOP_SAMPLES)
        if len(audio[start:end]) < WINDOW_SAMPLES:
            continue  # speechmos skips these (float end index one sample short, or past the end)
        starts.append(start)
    return audio, starts


def calibrate(raw: np.ndarray, personalized: bool) -> dict[str, float]:
    """Mean over windows of the calibrated SIG/BAK/OVRL, from raw [windows, 3] outputs."""
    polys = POLYFIT[personalized]
    values = {}
    for col, name in enumerate(("sig", "bak", "ovrl")):
        poly = np.poly1d(polys[name])
        values[name] = float(np.mean([poly(v) for v in raw[:, col]]))
    return values


def _frames(audio: np.ndarray, first: int, last: int) -> np.ndarray:
    """Frames [first, last) of FRAME samples every FRAME_HOP samples, as [n, FRAME] float32."""
    view = np.lib.stride_tricks.sliding_window_view(audio, FRAME)
    return np.ascontiguousarray(view[first * FRAME_HOP:(last - 1) * FRAME_HOP + 1:FRAME_HOP])


_FRAME_WISE_OPS = {"Transpose", "Mul", "Add", "Sqrt", "Pow", "Max", "Log", "Div", "Unsqueeze", "Relu"}


def _unknown_graph(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{path}: the DNSMOS graph is not the one ivbench knows how to share ({what}); "
                          "use dnsmos:backend=speechmos")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _framing_and_pool(graph: Any, inits: dict[str, Any], path: Path) -> tuple[Any, str, Any]:
    """The graph's one audio input, the framing's output (its only Concat) and the first max-pool,
    which must be 2x2 with stride 2 (so pooled rows line up for windows 100 frames apart)."""
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise _unknown_graph(path, "expected one input")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if dims[1:] != [WINDOW_SAMPLES]:
        raise _unknown_graph(path, f"input shape {dims}")
    concats = [n for n in graph.node if n.op_type == "Concat"]
    pools = [n for n in graph.node if n.op_type == "MaxPool"]
    if len(concats) != 1 or not pools:
        raise _unknown_graph(path, "framing or pooling not found")
    pool = pools[0]
    attrs = _attrs(pool)
    if list(attrs.get("kernel_shape", [])) != [2, 2] or list(attrs.get("strides", [])) != [2, 2] \
            or any(attrs.get("pads", [0])):
        raise _unknown_graph(path, "first max-pool is not 2x2 / stride 2")
    return inputs[0], concats[0].output[0], pool


def _halo_of(node: Any, is_pool: bool, path: Path) -> int:
    """Rows of a window edge that `node` makes depend on the zero padding: 1 for a 3x3 "same"
    convolution, 0 for frame-wise ops and the STFT's 1x1 convolution; anything else is refused."""
    if node.op_type == "Conv":
        a = _attrs(node)
        kernel = list(a.get("kernel_shape", []))
        if kernel == [1]:
            return 0  # the STFT as a 1x1 conv over frames
        if (kernel == [3, 3] and list(a.get("pads", [])) == [1, 1, 1, 1]
                and list(a.get("strides", [1, 1])) == [1, 1] and list(a.get("dilations", [1, 1])) == [1, 1]):
            return 1
        raise _unknown_graph(path, f"conv {node.name} with {a}")
    if node.op_type not in _FRAME_WISE_OPS and not is_pool:
        raise _unknown_graph(path, f"op {node.op_type} before the first pool")
    return 0


def _front(pool: Any, frames_name: str, producer: dict[str, Any], inits: dict[str, Any],
           path: Path) -> tuple[list[Any], int]:
    """The nodes from the framing to the first pool and their halo, after checking that they are
    only frame-wise ops and 3x3 "same" convolutions (shift-equivariant in time)."""
    nodes: list[Any] = []
    todo, seen, halo = [pool.output[0]], set(), 0
    while todo:
        name = todo.pop()
        if name in seen or name == frames_name or name in inits:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:
            raise _unknown_graph(path, f"{name} does not come from the framing")
        if node in nodes:
            continue
        nodes.append(node)
        halo += _halo_of(node, node.output[0] == pool.output[0], path)
        todo.extend(i for i in node.input if i)
    if halo == 0 or halo % 2:
        raise _unknown_graph(path, f"{halo} 3x3 convolutions before the first pool")
    return nodes, halo


def _between(producer: dict[str, Any], inits: dict[str, Any], outputs: list[str], stop: str) -> list[Any]:
    """The nodes that compute `outputs` from the tensor `stop` (and the weights)."""
    nodes: list[Any] = []
    todo, seen = list(outputs), set()
    while todo:
        name = todo.pop()
        if name in seen or name == stop or name in inits:
            continue
        seen.add(name)
        node = producer[name]
        if node not in nodes:
            nodes.append(node)
        todo.extend(i for i in node.input if i)
    return nodes


def _submodel(model: Any, inits: dict[str, Any], nodes: list[Any], inp: str, out: str,
              rank_in: int, rank_out: int) -> bytes:
    """`nodes` (in the graph's order) as a checked model from tensor `inp` to tensor `out`."""
    import onnx
    from onnx import helper

    keep = {n.output[0] for n in nodes}
    ordered = [n for n in model.graph.node if n.output[0] in keep]
    used = sorted({i for n in ordered for i in n.input if i in inits})
    g = helper.make_graph(
        ordered, "part",
        [helper.make_tensor_value_info(inp, onnx.TensorProto.FLOAT, [f"i{k}" for k in range(rank_in)])],
        [helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, [f"o{k}" for k in range(rank_out)])],
        [inits[u] for u in used])
    part = helper.make_model(g, opset_imports=model.opset_import, ir_version=model.ir_version)
    onnx.checker.check_model(part)
    return part.SerializeToString()


def _checked_framing(framing: Any, input_name: str, path: Path) -> int:
    """Frames per window, after checking the framing (slices, reshapes, concat) gives frames of
    FRAME samples every FRAME_HOP samples."""
    probe = np.random.default_rng(0).standard_normal((1, WINDOW_SAMPLES)).astype(np.float32)
    got = framing.run(None, {input_name: probe})[0][0]
    n = (WINDOW_SAMPLES - FRAME) // FRAME_HOP + 1
    if got.shape != (n, FRAME) or not np.array_equal(got, _frames(probe[0], 0, n)):
        raise _unknown_graph(path, f"framing is not {FRAME} samples every {FRAME_HOP}")
    return n


class _Split:
    """The primary network cut at its first max-pool, after checking that the cut is valid."""

    def __init__(self, path: Path, session_options: Any) -> None:
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(path))
        graph = model.graph
        inits = {i.name: i for i in graph.initializer}
        producer = {out: node for node in graph.node for out in node.output}
        audio_input, frames_name, pool = _framing_and_pool(graph, inits, path)
        front_nodes, self.halo = _front(pool, frames_name, producer, inits, path)
        pooled = pool.output[0]
        back_nodes = _between(producer, inits, [o.name for o in graph.output], pooled)
        framing_nodes = _between(producer, inits, [frames_name], audio_input.name)

        def session(nodes: list[Any], inp: str, out: str, rank_in: int, rank_out: int) -> Any:
            return ort.InferenceSession(_submodel(model, inits, nodes, inp, out, rank_in, rank_out),
                                        session_options, providers=["CPUExecutionProvider"])

        self.front = session(front_nodes, frames_name, pooled, 3, 4)
        self.back = session(back_nodes, pooled, graph.output[0].name, 4, 2)
        self.front_input, self.back_input = frames_name, pooled
        framing = session(framing_nodes, audio_input.name, frames_name, 2, 3)
        self.window_frames = _checked_framing(framing, audio_input.name, path)  # 900


def _hz_to_mel(hz: Union[float, np.ndarray]) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale: linear to 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    lin_step, knee_hz = 200.0 / 3, 1000.0
    knee_mel, log_step = knee_hz / lin_step, np.log(6.4) / 27.0
    return np.where(hz >= knee_hz, knee_mel + np.log(np.maximum(hz, knee_hz) / knee_hz) / log_step, hz / lin_step)


def _mel_to_hz(mel: Union[float, np.ndarray]) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    lin_step, knee_hz = 200.0 / 3, 1000.0
    knee_mel, log_step = knee_hz / lin_step, np.log(6.4) / 27.0
    return np.where(mel >= knee_mel, knee_hz * np.exp(log_step * (mel - knee_mel)), mel * lin_step)


def mel_filterbank(sr: int = SR, n_fft: int = MEL_NFFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular filters on the Slaney mel scale, each normalised to unit area ([n_mels, bins])."""
    bins = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    widths = np.diff(edges)
    rise = (bins[None, :] - edges[:-2, None]) / widths[:-1, None]
    fall = (edges[2:, None] - bins[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rise, fall))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class FastDNSMOS:
    """SIG/BAK/OVRL and P.808 of one 16 kHz clip; same numbers as speechmos, less work."""

    def __init__(self, personalized: bool = False, threads: int = 0, window_batch: int = 8,
                 chunk_frames: int = 1000) -> None:
        import onnxruntime as ort

        self.personalized = personalized
        self.primary_path, self.p808_path = model_paths(personalized)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        self.split = _Split(self.primary_path, options)
        self.full = ort.InferenceSession(str(self.primary_path), options, providers=["CPUExecutionProvider"])
        self.p808 = ort.InferenceSession(str(self.p808_path), options, providers=["CPUExecutionProvider"])
        self.window_batch = max(1, int(window_batch))
        self.chunk_frames = max(2 * self.split.halo, int(chunk_frames) // 2 * 2)
        self.mel_basis = mel_filterbank()
        n = np.arange(MEL_NFFT)
        self.mel_window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / MEL_NFFT)  # periodic Hann, float64

    # -- P.808 ---------------------------------------------------------------------------
    def _mel_power(self, frames: np.ndarray) -> np.ndarray:
        """[n, 321] float32 frames -> [n, 120] float32 mel power (librosa's arithmetic)."""
        spec = np.fft.rfft(self.mel_window * frames, axis=-1).astype(np.complex64)
        power = np.abs(spec) ** 2
        return power @ self.mel_basis.T

    def _mel_run(self, audio: np.ndarray, first: int, last: int) -> np.ndarray:
        """Mel power of clip-level frames [first, last): frame g covers samples from 160*(g-1)."""
        out = np.empty((last - first, N_MELS), dtype=np.float32)
        view = np.lib.stride_tricks.sliding_window_view(audio, MEL_NFFT)
        for s in range(first, last, 4096):
            e = min(last, s + 4096)
            frames = view[(s - 1) * MEL_HOP:(e - 2) * MEL_HOP + 1:MEL_HOP]
            out[s - first:e - first] = self._mel_power(frames)
        return out

    def _p808_features(self, audio: np.ndarray, start: int, mel: np.ndarray, mel_first: int) -> np.ndarray:
        """One window's P.808 input: speechmos' dB-scaled mel spectrogram of audio_seg[:-160]."""
        n = P808_FRAMES
        f0 = start // MEL_HOP
        half = MEL_NFFT // 2
        seg_end = start + P808_SAMPLES
        edge = np.zeros((2, MEL_NFFT), dtype=np.float32)
        edge[0, half:] = audio[start:start + MEL_NFFT - half]  # centred frame 0: zeros before the window
        tail = audio[seg_end - (MEL_NFFT - 1):seg_end]
        edge[1, :len(tail)] = tail  # last frame: one sample past the segment is zero
        edges = self._mel_power(edge)
        spec = np.empty((n, N_MELS), dtype=np.float32)
        spec[0], spec[-1] = edges[0], edges[1]
        spec[1:-1] = mel[f0 + 1 - mel_first:f0 + n - 1 - mel_first]
        amin = 1e-10
        db = 10.0 * np.log10(np.maximum(amin, spec))
        db -= 10.0 * np.log10(np.maximum(amin, spec.max()))
        db = np.maximum(db, db.max() - 80.0)
        return ((db + 40) / 40).astype(np.float32)

    # -- primary network ------------------------------------------------------------------
    def _finish(self, audio: np.ndarray, starts: list[int], batch: np.ndarray,
                raw: dict[int, np.ndarray]) -> None:
        """Patch each window's edge rows from its own edge strips, then run the rest of the net."""
        split, n = self.split, self.split.window_frames
        strip = 2 * split.halo
        strips = np.stack([_frames(audio, f + off, f + off + strip) for f in starts for off in (0, n - strip)])
        edge = split.front.run(None, {split.front_input: strips})[0]  # [2w, C, halo, F']
        keep = split.halo // 2
        for i in range(len(starts)):
            batch[i, :, :keep] = edge[2 * i, :, :keep]
            batch[i, :, -keep:] = edge[2 * i + 1, :, keep:]
        out = split.back.run(None, {split.back_input: batch})[0]
        for f, r in zip(starts, out):
            raw[f] = r

    def _primary(self, audio: np.ndarray, frame_starts: list[int]) -> np.ndarray:
        split, n = self.split, self.split.window_frames
        if len(frame_starts) == 1:  # one window: nothing to share
            f = frame_starts[0]
            x = audio[f * FRAME_HOP:f * FRAME_HOP + WINDOW_SAMPLES][None]
            return self.full.run(None, {self.full.get_inputs()[0].name: x})[0]
        available = (len(audio) - FRAME) // FRAME_HOP + 1
        halo, rows_per = split.halo, n // 2
        raw: dict[int, np.ndarray] = {}
        i = 0
        while i < len(frame_starts):  # a run: windows that overlap their neighbour
            j = i
            while j + 1 < len(frame_starts) and frame_starts[j + 1] < frame_starts[j] + n:
                j += 1
            run = frame_starts[i:j + 1]
            buf: Optional[np.ndarray] = None
            buf_row = run[0] // 2  # pooled row index of buf[:, 0]
            batch: Optional[np.ndarray] = None  # windows waiting for the rest of the network
            waiting: list[int] = []
            todo = list(run)
            end = run[-1] + n
            for s in range(run[0], end, self.chunk_frames):
                e = min(end, s + self.chunk_frames)
                lo, hi = max(0, s - halo), min(available, e + halo)
                pooled = split.front.run(None, {split.front_input: _frames(audio, lo, hi)[None]})[0][0]
                rows = pooled[:, (s - lo) // 2:(e - lo) // 2]
                buf = rows if buf is None else np.concatenate([buf, rows], axis=1)
                top = e // 2  # pooled rows below this are in buf
                while todo and todo[0] // 2 + rows_per <= top:
                    f = todo.pop(0)
                    if batch is None:
                        batch = np.empty((min(self.window_batch, len(run)), buf.shape[0], rows_per, buf.shape[2]),
                                         dtype=np.float32)
                    a = f // 2 - buf_row
                    batch[len(waiting)] = buf[:, a:a + rows_per]
                    waiting.append(f)
                    if len(waiting) == len(batch):
                        self._finish(audio, waiting, batch, raw)
                        waiting = []
                drop = (todo[0] // 2 if todo else top) - buf_row
                if drop > 0:
                    buf, buf_row = buf[:, drop:], buf_row + drop
            if waiting:
                assert batch is not None  # filled when the first window waited
                self._finish(audio, waiting, batch[:len(waiting)], raw)
            i = j + 1
        return np.stack([raw[f] for f in frame_starts])

    def __call__(self, samples: np.ndarray) -> dict[str, Any]:
        audio, starts = prepare(samples)
        if not starts:
            raise ValueError("speechmos' windowing kept no 9 s window of this audio")
        frame_starts = [s // FRAME_HOP for s in starts]
        raw = self._primary(audio, frame_starts)
        values = calibrate(raw, self.personalized)

        mel_first = frame_starts[0] + 1  # each window's first and last mel frame are its own
        mel = self._mel_run(audio, mel_first, frame_starts[-1] + P808_FRAMES - 1)
        feats = [self._p808_features(audio, s, mel, mel_first) for s in starts]
        p808 = []
        for k in range(0, len(feats), self.window_batch):
            out = self.p808.run(None, {self.p808.get_inputs()[0].name: np.stack(feats[k:k + self.window_batch])})[0]
            p808.extend(out[:, 0])
        values["p808"] = float(np.mean(p808))
        values["windows"] = len(starts)
        return values


def speechmos_scores(samples: np.ndarray, personalized: bool = False) -> dict[str, Any]:
    """The same scores from speechmos itself (needs librosa), for reference and comparison."""
    from speechmos import dnsmos

    out = dnsmos.run(np.asarray(samples, dtype=np.float32), SR,
                     model_type="dnsmos_personalized" if personalized else "dnsmos")
    return {"sig": float(out["sig_mos"]), "bak": float(out["bak_mos"]), "ovrl": float(out["ovrl_mos"]),
            "p808": float(out["p808_mos"]), "windows": len(prepare(samples)[1])}
