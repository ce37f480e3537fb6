"""Whisper's audio encoder in float32 on onnxruntime, built from a CTranslate2 model folder.

Why: on the CPU the encoder is the largest part of transcribing a reply (each reply fills a
30 s window of its own, whatever its length), and CTranslate2's int8 encoder is slower there
than a float32 one on onnxruntime's kernels (measured by benchmarks/scoring_vs_peer.py
--profile, one thread: about 0.42 s against 0.33 s a window on the 2-core dev machine). Float32
is also openai-whisper's own precision, so the encoder output is the reference code's (to
float32 rounding). The decoder stays CTranslate2's (int8 on the CPU): its steps are small
matrix-vector products over the 51 864-token vocabulary, where int8 is 3x faster than float32.

The graph is openai-whisper's `AudioEncoder`, written with ONNX operators from the folder's
own weights (the float16 weights of the bundled tiny.en, or any CTranslate2 Whisper folder):
conv1 + GELU, conv2 (stride 2) + GELU, the positional embedding, pre-norm residual blocks of
multi-head self-attention and a GELU MLP, and the final layer norm. It needs onnx and
onnxruntime, which ivbench depends on anyway (DNSMOS), and no torch. Each row of a batch is
computed on its own (no op mixes rows), so a reply's encoding does not depend on its batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np

OPSET = 20  # LayerNormalization (17) and Gelu (20) as single ops
CONTRIB = "com.microsoft"  # onnxruntime's own operators (MultiHeadAttention)
LN_EPSILON = 1e-5  # torch.nn.LayerNorm's default, as openai-whisper uses it


class _Graph:
    """A growing list of ONNX nodes and float32 initialisers with generated names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def linear(self, x: str, weight: np.ndarray, bias: Union[np.ndarray, None]) -> str:
        """x @ weight.T + bias (torch.nn.Linear's layout)."""
        y = self.op("MatMul", [x, self.const("w", weight.T.astype(np.float32))])
        return y if bias is None else self.op("Add", [y, self.const("b", bias.astype(np.float32))])

    def layer_norm(self, x: str, state: dict[str, np.ndarray], prefix: str) -> str:
        return self.op("LayerNormalization", [x, self.const("g", state[f"{prefix}.weight"].astype(np.float32)),
                                              self.const("b", state[f"{prefix}.bias"].astype(np.float32))],
                       axis=-1, epsilon=LN_EPSILON)


def _attention(g: _Graph, x: str, state: dict[str, np.ndarray], prefix: str, heads: int) -> str:
    """openai-whisper's MultiHeadAttention over x [batch, ctx, state], no mask: onnxruntime's
    fused MultiHeadAttention (softmax(q k^T / sqrt(head_dim)) v per head; measured 10% faster
    on the encoder than the same graph written with MatMul and Softmax)."""
    from onnx import helper

    q = g.linear(x, state[f"{prefix}.query.weight"], state[f"{prefix}.query.bias"])
    k = g.linear(x, state[f"{prefix}.key.weight"], None)  # Whisper's key has no bias
    v = g.linear(x, state[f"{prefix}.value.weight"], state[f"{prefix}.value.bias"])
    merged = g.name("attention")
    g.nodes.append(helper.make_node("MultiHeadAttention", [q, k, v], [merged], domain=CONTRIB,
                                    num_heads=heads))
    return g.linear(merged, state[f"{prefix}.out.weight"], state[f"{prefix}.out.bias"])


def encoder_model(dims: dict[str, int], state: dict[str, np.ndarray]) -> bytes:
    """The serialised ONNX encoder: input "mel" [batch, n_mels, 3000] -> "encoded" [batch, 1500, state].
    (onnxruntime checks it when it loads it: onnx's checker does not know onnxruntime's operators.)"""
    import onnx
    from onnx import helper

    g = _Graph()
    x = "mel"
    for conv, stride in (("encoder.conv1", 1), ("encoder.conv2", 2)):
        x = g.op("Conv", [x, g.const("w", state[f"{conv}.weight"].astype(np.float32)),
                          g.const("b", state[f"{conv}.bias"].astype(np.float32))],
                 kernel_shape=[3], pads=[1, 1], strides=[stride])
        x = g.op("Gelu", [x])
    x = g.op("Transpose", [x], perm=[0, 2, 1])
    x = g.op("Add", [x, g.const("pos", state["encoder.positional_embedding"].astype(np.float32))])
    for i in range(dims["n_audio_layer"]):
        p = f"encoder.blocks.{i}"
        x = g.op("Add", [x, _attention(g, g.layer_norm(x, state, f"{p}.attn_ln"), state, f"{p}.attn",
                                       dims["n_audio_head"])])
        h = g.layer_norm(x, state, f"{p}.mlp_ln")
        h = g.linear(g.op("Gelu", [g.linear(h, state[f"{p}.mlp.0.weight"], state[f"{p}.mlp.0.bias"])]),
                     state[f"{p}.mlp.2.weight"], state[f"{p}.mlp.2.bias"])
        x = g.op("Add", [x, h])
    x = g.layer_norm(x, state, "encoder.ln_post")
    g.nodes.append(helper.make_node("Identity", [x], ["encoded"]))
    frames = 2 * dims["n_audio_ctx"]
    graph = helper.make_graph(
        g.nodes, "whisper_encoder",
        [helper.make_tensor_value_info("mel", onnx.TensorProto.FLOAT, ["batch", dims["n_mels"], frames])],
        [helper.make_tensor_value_info("encoded", onnx.TensorProto.FLOAT,
                                       ["batch", dims["n_audio_ctx"], dims["n_audio_state"]])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(CONTRIB, 1)])
    return model.SerializeToString()


class OnnxEncoder:
    """The encoder of the CTranslate2 Whisper folder `model_dir`, callable on [batch, n_mels, 3000]
    float32 log-mel features; `threads` onnxruntime threads per call (calls may run side by side)."""

    def __init__(self, model_dir: Union[str, Path], threads: int = 1) -> None:
        import onnxruntime as ort

        from .checkpoint import openai_state

        dims, state = openai_state(model_dir)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = max(1, int(threads))
        # Idle pool threads would spin while CTranslate2 decodes on the same cores; measured: no
        # latency cost without spinning (one reply, 2 threads: 457 against 461 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(encoder_model(dims, state), options, providers=["CPUExecutionProvider"])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        mel = np.ascontiguousarray(features, dtype=np.float32)
        return self.session.run(None, {"mel": mel[None] if mel.ndim == 2 else mel})[0]
