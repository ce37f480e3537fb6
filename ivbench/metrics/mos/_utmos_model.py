"""The UTMOS22 strong learner (Saeki et al., 2022) for inference, in torch.

The network: a wav2vec 2.0 base feature encoder and context transformer (fairseq layout:
seven 1-D convolutions, the first with a per-channel group norm; a weight-normalised
convolutional position embedding; twelve post-norm transformer layers), the frame features
concatenated with a data-domain and a listener ("judge") embedding, a bidirectional LSTM, a
two-layer projection to one score per frame, and the mean over frames mapped by `2 s + 3`.

Parameter names and shapes follow the released `utmos22_strong_step7459_v1.pt` state dict
(SpeechMOS layout, the domain and listener embeddings already picked), so that file loads
with `strict=True`; `from_lightning` maps the UTMOS22 repository's own PyTorch Lightning
checkpoint (`epoch=3-step=7459.ckpt`) onto it. As in SpeechMOS, `forward` takes the clip at its
own sample rate and resamples it to 16 kHz with torchaudio's windowed-sinc filter
(`_sinc_resample`). Importing this module imports torch: import it inside `load()`.
"""
from __future__ import annotations

from typing import Any, Optional
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelFileError
from ...model_files import state_dict_mismatch
from ._sinc_resample import sinc_resample

SSL_DIM, CONV_DIM, FFN_DIM, HEADS, LAYERS = 768, 512, 3072, 12, 12
EMB_DIM, LSTM_DIM, PROJ_DIM = 128, 512, 2048
CONV_SPECS = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # (kernel, stride) of the feature encoder
POS_KERNEL, POS_GROUPS = 128, 16
MIN_SAMPLES = 400  # the feature encoder's receptive field: shorter input gives no frame
SAMPLE_RATE = 16000

# The Lightning module of the UTMOS22 repository (strong learner without the phoneme encoder):
# feature_extractors = [SSL wrapper around fairseq's wav2vec 2.0, data-domain embedding],
# output_layers = [listener-conditioned BLSTM, projection (Linear, ReLU, Dropout, Linear)].
# Its inference (the UTMOS demo, SpeechMOS's conversion) scores as domain 0 (the main track's
# data) and listener 288; those rows of the two embedding tables become `domain_emb` and
# `judge_emb`.
LIGHTNING_RENAMES = (("feature_extractors.0.ssl_model.", "wav2vec2."),
                     ("output_layers.0.decoder_rnn.", "blstm."),
                     ("output_layers.1.net.0.", "projection.0."),
                     ("output_layers.1.net.3.", "projection.2."))
LIGHTNING_DOMAIN_TABLE, DOMAIN_ID = "feature_extractors.1.embedding.weight", 0
LIGHTNING_JUDGE_TABLE, JUDGE_ID = "output_layers.0.judge_embedding.weight", 288


class FeatureEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers = []
        for i, (kernel, stride) in enumerate(CONV_SPECS):
            conv = nn.Conv1d(1 if i == 0 else CONV_DIM, CONV_DIM, kernel, stride=stride, bias=False)
            # Index 1 is fairseq's (inactive) dropout slot: kept so parameter names line up.
            if i == 0:
                layers.append(nn.Sequential(conv, nn.Identity(), nn.GroupNorm(CONV_DIM, CONV_DIM), nn.GELU()))
            else:
                layers.append(nn.Sequential(conv, nn.Identity(), nn.GELU()))
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wave: Tensor) -> Tensor:  # (B, T) -> (B, C, frames)
        x = wave.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class WeightNormConv1d(nn.Module):
    """A grouped conv whose weight is g * v / |v|, the norm taken over all but the kernel axis
    (weight norm with dim=2, stored as `weight_g` and `weight_v`)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.weight_v, std=(4.0 / (kernel * channels)) ** 0.5)
        self.padding, self.groups = kernel // 2, groups

    def forward(self, x: Tensor) -> Tensor:
        norm = self.weight_v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        weight = self.weight_v * (self.weight_g / norm)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(SSL_DIM, SSL_DIM)
        self.k_proj = nn.Linear(SSL_DIM, SSL_DIM)
        self.v_proj = nn.Linear(SSL_DIM, SSL_DIM)
        self.out_proj = nn.Linear(SSL_DIM, SSL_DIM)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C)
        b, t, c = x.shape
        heads = [p(x).view(b, t, HEADS, c // HEADS).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj)]
        y = F.scaled_dot_product_attention(*heads)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, c))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: x = LN(x + attn(x)); x = LN(x + fc2(gelu(fc1(x))))."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = SelfAttention()
        self.self_attn_layer_norm = nn.LayerNorm(SSL_DIM)
        self.fc1 = nn.Linear(SSL_DIM, FFN_DIM)
        self.fc2 = nn.Linear(FFN_DIM, SSL_DIM)
        self.final_layer_norm = nn.LayerNorm(SSL_DIM)

    def forward(self, x: Tensor) -> Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class ContextEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(WeightNormConv1d(SSL_DIM, POS_KERNEL, POS_GROUPS))
        self.layer_norm = nn.LayerNorm(SSL_DIM)
        self.layers = nn.ModuleList([EncoderLayer() for _ in range(LAYERS)])

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C)
        pos = self.pos_conv(x.transpose(1, 2))[:, :, :-1]  # even kernel: drop the extra last frame
        x = self.layer_norm(x + F.gelu(pos).transpose(1, 2))
        # fairseq pads the sequence to an even length with a masked frame; a masked key changes
        # nothing and the padded query is dropped, so the padding is left out here.
        for layer in self.layers:
            x = layer(x)
        return x


class Wav2Vec2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor = FeatureEncoder()
        self.layer_norm = nn.LayerNorm(CONV_DIM)
        self.post_extract_proj = nn.Linear(CONV_DIM, SSL_DIM)
        self.encoder = ContextEncoder()
        self.mask_emb = nn.Parameter(torch.zeros(SSL_DIM))  # pre-training only; kept for loading

    def forward(self, wave: Tensor) -> Tensor:  # (B, T) -> (B, frames, 768)
        x = self.feature_extractor(wave).transpose(1, 2)
        return self.encoder(self.post_extract_proj(self.layer_norm(x)))


class UTMOS22Strong(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wav2vec2 = Wav2Vec2()
        self.domain_emb = nn.Parameter(torch.zeros(1, EMB_DIM), requires_grad=False)
        self.judge_emb = nn.Parameter(torch.zeros(1, EMB_DIM), requires_grad=False)
        self.blstm = nn.LSTM(SSL_DIM + 2 * EMB_DIM, LSTM_DIM, batch_first=True, bidirectional=True)
        self.projection = nn.Sequential(nn.Linear(2 * LSTM_DIM, PROJ_DIM), nn.ReLU(), nn.Linear(PROJ_DIM, 1))

    def forward(self, wave: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
        """(B, T) waveforms at `sample_rate`, all of one length -> (B,) MOS."""
        ssl = self.wav2vec2(sinc_resample(wave, sample_rate, SAMPLE_RATE))
        b, t, _ = ssl.shape
        emb = torch.cat([self.domain_emb, self.judge_emb], dim=1).unsqueeze(1).expand(b, t, -1)
        frames = self.projection(self.blstm(torch.cat([ssl, emb], dim=2))[0])
        return frames.mean(dim=1).squeeze(1) * 2 + 3


def is_lightning_state(state: Mapping[str, Any]) -> bool:
    return any(key.startswith(LIGHTNING_RENAMES[0][0]) for key in state)


def from_lightning(state: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The UTMOS22 Lightning module's state dict in the SpeechMOS layout. Keys of other parts
    (a phoneme encoder, say) stay as they are, for `check_state_dict` to name."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        for old, new in LIGHTNING_RENAMES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            if key not in (LIGHTNING_DOMAIN_TABLE, LIGHTNING_JUDGE_TABLE):
                out[key] = value
    for table, row, name in ((LIGHTNING_DOMAIN_TABLE, DOMAIN_ID, "domain_emb"),
                             (LIGHTNING_JUDGE_TABLE, JUDGE_ID, "judge_emb")):
        weight = state.get(table)
        if weight is None:
            continue  # check_state_dict names the missing embedding
        if weight.dim() != 2 or weight.shape[0] <= row:
            raise ModelFileError(f"{where}: {table} has shape {tuple(weight.shape)}; the UTMOS22 strong "
                                 f"learner's table has row {row} (of 3 domains / 3000 listeners)")
        out[name] = weight[row:row + 1].clone()
    return out


def check_state_dict(model: nn.Module, state: Mapping[str, Any], where: str) -> Optional[str]:
    """A sentence saying why `state` is not this model's checkpoint, or None when it is."""
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem is None:
        return None
    return (f"{where} is not a UTMOS22 strong checkpoint (the SpeechMOS state dict "
            f"utmos22_strong_step7459_v1.pt, or the UTMOS22 Lightning checkpoint epoch=3-step=7459.ckpt): "
            f"{problem}")
