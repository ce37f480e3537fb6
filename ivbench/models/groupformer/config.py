"""GroupFormer configuration and the named backbone shapes (no torch here).

A checkpoint folder holds `groupformer.json` (a `GroupFormerConfig`); paths in it are relative
to the folder. The named shapes build random weights for latency profiling without downloads.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ...errors import ConfigError

CONFIG_NAME = "groupformer.json"

# Special tokens added to the LLM's vocabulary.
SOSP = "<sosp>"
EOSP = "<eosp>"
SPEECH = "<speech>"

# The output modality is told to the model by the system message, so one set of weights does
# all four cross-modal tasks and the text-first chain (a distinct prefix for each behaviour).
SYSTEM_PROMPTS = {
    "speech": "Reply in speech.",
    "text": "Reply in text.",
    "text_first": "Reply in text, then speak it.",
}

# mHuBERT 25 Hz (slprl/mhubert-base-25hz): HuBERT base with an eighth conv layer (kernel 2,
# stride 2), so 640 samples at 16 kHz per frame.
HUBERT_25HZ_CONV = dict(
    conv_dim=[512] * 8,
    conv_stride=[5, 2, 2, 2, 2, 2, 2, 2],
    conv_kernel=[10, 3, 3, 3, 3, 2, 2, 2],
)

# The unit HiFi-GAN of the speech-resynthesis family, shaped like the TWIST 25 Hz LJ vocoder:
# 500 units, hop 640 (5·4·4·4·2), duration predictor present (unused: units are not
# de-duplicated, so one unit is exactly 640 samples).
VOCODER_25HZ = dict(
    resblock="1",
    upsample_rates=[5, 4, 4, 4, 2],
    upsample_kernel_sizes=[11, 8, 8, 8, 4],
    upsample_initial_channel=512,
    resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    num_embeddings=500,
    embedding_dim=128,
    model_in_dim=128,
    sampling_rate=16000,
    code_hop_size=640,
    dur_predictor_params=dict(encoder_embed_dim=128, var_pred_hidden_dim=128,
                              var_pred_kernel_size=3, var_pred_dropout=0.5),
)

# Streamed vocoding (vocoder.StreamingVocoder): units the vocoder waits for past a chunk, units
# of left context re-vocoded, seam cross-fade in samples. Chosen with
# benchmarks/vocoder_streaming.py (results/vocoder_streaming_2026-11-29.txt): the smallest
# look-ahead, then context, at which streamed audio stays ≥ 40 dB SNR from whole-utterance
# vocoding on TWIST-shaped vocoders whose random weights keep the signal's variance (a
# look-ahead of 2 and context of 8 gave 10–13 dB there). The cost: the audio trails the units
# by 400 ms, and with G=5 the first packet waits for a third group (docs/architecture.md,
# "Streaming vocoder").
STREAM_LOOKAHEAD = 10
STREAM_CONTEXT = 16
STREAM_FADE = 320

SHAPES: dict[str, dict[str, Any]] = {
    # A few hundred thousand parameters: tests and CPU latency profiling.
    "tiny": dict(
        llm=dict(model_type="qwen2", hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 rope_theta=10000.0, tie_word_embeddings=True, vocab_size=None),
        hubert=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    conv_dim=[32] * 8, conv_stride=HUBERT_25HZ_CONV["conv_stride"],
                    conv_kernel=HUBERT_25HZ_CONV["conv_kernel"], num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=4),
        hubert_layer=2,
        vocoder=dict(VOCODER_25HZ, upsample_initial_channel=32, resblock_kernel_sizes=[3],
                     resblock_dilation_sizes=[[1, 3, 5]], embedding_dim=16, model_in_dim=16,
                     dur_predictor_params=dict(encoder_embed_dim=16, var_pred_hidden_dim=16,
                                               var_pred_kernel_size=3, var_pred_dropout=0.5)),
        heads=dict(unit_dim=32, adaptor_hidden=128, group_layers=2, group_width=64, group_heads=4,
                   group_ffn=128),
    ),
    # Qwen2-0.5B-Instruct's shape.
    "qwen2-0.5b": dict(
        llm=dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                 rope_theta=1000000.0, tie_word_embeddings=True, vocab_size=151936),
        hubert=dict(HUBERT_25HZ_CONV),
        hubert_layer=11,
        vocoder=dict(VOCODER_25HZ),
        heads=dict(unit_dim=256, adaptor_hidden=2048, group_layers=2, group_width=512, group_heads=8,
                   group_ffn=2048),
    ),
    # Qwen2-7B-Instruct's shape (the paper's backbone).
    "qwen2-7b": dict(
        llm=dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                 rope_theta=1000000.0, tie_word_embeddings=False, vocab_size=152064),
        hubert=dict(HUBERT_25HZ_CONV),
        hubert_layer=11,
        vocoder=dict(VOCODER_25HZ),
        heads=dict(unit_dim=512, adaptor_hidden=4096, group_layers=4, group_width=1024, group_heads=16,
                   group_ffn=4096),
    ),
}


def shape(name: str) -> dict[str, Any]:
    try:
        return SHAPES[name]
    except KeyError:
        raise ConfigError(f"unknown GroupFormer size {name!r}: use one of {', '.join(SHAPES)}") from None


@dataclass
class GroupFormerConfig:
    """Everything but the LLM's own config; saved as `groupformer.json`."""

    group_size: int = 5  # G units per LLM position
    n_units: int = 500  # k-means clusters; unit id n_units is the end-of-speech / padding unit
    unit_rate_hz: int = 25
    sample_rate: int = 16000
    # speech adaptor: embed each unit, concatenate the G embeddings, project to the LLM width
    unit_dim: int = 512
    adaptor: str = "mlp"  # "mlp" (two layers) or "linear"
    adaptor_hidden: int = 4096
    # GroupModel: a small bidirectional transformer encoder over [projected hidden, G queries]
    group_layers: int = 4
    group_width: int = 1024
    group_heads: int = 16
    group_ffn: int = 4096
    group_dropout: float = 0.0
    llm_hidden_size: int = 0  # filled in from the LLM
    # speech tokenizer: HuBERT layer whose features are quantised
    hubert_layer: int = 11
    hubert_normalize: bool = False
    # files inside the checkpoint folder (or absolute paths)
    llm: str = "llm"
    heads: str = "heads.safetensors"
    hubert: str = "hubert"
    kmeans: str = "kmeans.npy"
    vocoder: str = "vocoder/generator.pt"
    vocoder_config: str = "vocoder/config.json"
    system_prompts: dict[str, str] = field(default_factory=lambda: dict(SYSTEM_PROMPTS))
    shape: Optional[str] = None  # the named shape a random model was built with
    untrained: bool = False

    @property
    def pad_unit(self) -> int:
        return self.n_units

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = CONFIG_NAME) -> GroupFormerConfig:
        from ...errors import ModelFileError

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelFileError(f"{where}: unknown keys {unknown}")
        return cls(**data)

    def save(self, folder: Union[str, Path]) -> None:
        path = Path(folder) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Union[str, Path]) -> GroupFormerConfig:
        from ...model_files import MissingModelFile, read_json_object

        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise MissingModelFile(f"{folder}: no {CONFIG_NAME}; is this a GroupFormer checkpoint folder?")
        return cls.from_dict(read_json_object(path, "GroupFormer config"), where=f"GroupFormer config {path}")
