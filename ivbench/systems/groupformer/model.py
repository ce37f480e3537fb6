"""GroupFormer (IntrinsicVoice, arXiv 2410.08035): LLM + speech adaptor + GroupModel.

- `SpeechAdaptor`: embeds each unit of a group, concatenates the G embeddings and projects
  them to the LLM's width (linear or two-layer MLP), as VALL-E 2's group embedding: one group
  is one LLM position.
- `GroupModel`: when the LLM's next token is `<speech>`, its last hidden state (projected)
  and G learnable queries pass through a small bidirectional transformer encoder that
  predicts all G units at once; unit id `n_units` is the end-of-speech (padding) unit.
- `GroupFormer`: a transformers causal LM with `<sosp>`, `<eosp>`, `<speech>` added, the two
  heads, the speech tokenizer (HuBERT + k-means) and the unit vocoder;
  `from_pretrained` / `save_pretrained` / `random`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .chat import Message, Rendered, SpecialIds, add_speech_tokens, build_fallback_tokenizer, render
from .config import GroupFormerConfig, shape as named_shape
from .speech_tokenizer import SpeechTokenizer, load_speech_tokenizer, random_speech_tokenizer
from .vocoder import UnitHiFiGAN, load_vocoder, random_vocoder

log = logging.getLogger("ivbench.groupformer")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype {dtype!r}: use auto, float32, bfloat16 or float16") from None


class SpeechAdaptor(nn.Module):
    def __init__(self, cfg: GroupFormerConfig, hidden_size: int) -> None:
        super().__init__()
        self.group_size = cfg.group_size
        self.unit_embed = nn.Embedding(cfg.n_units + 1, cfg.unit_dim)  # + the end/padding unit
        width = cfg.group_size * cfg.unit_dim
        if cfg.adaptor == "linear":
            self.proj = nn.Sequential(nn.Linear(width, hidden_size))
        elif cfg.adaptor == "mlp":
            self.proj = nn.Sequential(nn.Linear(width, cfg.adaptor_hidden), nn.GELU(),
                                      nn.Linear(cfg.adaptor_hidden, hidden_size))
        else:
            raise ValueError(f"adaptor {cfg.adaptor!r}: use 'mlp' or 'linear'")

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """(M, G) unit ids → (M, hidden)."""
        return self.proj(self.unit_embed(groups).flatten(1))


class GroupModel(nn.Module):
    def __init__(self, cfg: GroupFormerConfig, hidden_size: int) -> None:
        super().__init__()
        width = cfg.group_width
        self.in_proj = nn.Linear(hidden_size, width)
        self.queries = nn.Parameter(torch.randn(cfg.group_size, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, cfg.group_heads, cfg.group_ffn, cfg.group_dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.group_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.unit_head = nn.Linear(width, cfg.n_units + 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(M, hidden) LLM states → (M, G, n_units + 1) unit logits, all G units at once."""
        x = torch.cat([self.in_proj(hidden).unsqueeze(1),
                       self.queries.unsqueeze(0).expand(hidden.shape[0], -1, -1)], dim=1)
        x = self.encoder(x)  # bidirectional: no mask
        return self.unit_head(self.norm(x[:, 1:]))


def _resolve(folder: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else folder / path


def _dtype_kwarg() -> str:
    """transformers ≥ 4.56 takes `dtype=`; earlier versions `torch_dtype=`."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _looks_like_hub_id(name: Optional[str]) -> bool:
    return bool(name) and name.count("/") == 1 and not name.startswith((".", "/", "~"))


class GroupFormer(nn.Module):
    def __init__(self, config: GroupFormerConfig, llm: nn.Module, tokenizer: Any,
                 speech_tokenizer: Optional[SpeechTokenizer] = None, vocoder: Optional[UnitHiFiGAN] = None) -> None:
        super().__init__()
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer
        if add_speech_tokens(tokenizer):
            log.warning("the tokenizer had no speech tokens: added them with untrained embeddings")
        if llm.get_input_embeddings().num_embeddings < len(tokenizer):
            llm.resize_token_embeddings(len(tokenizer))
        self.special = SpecialIds.of(tokenizer)
        hidden = llm.config.hidden_size
        config.llm_hidden_size = hidden
        self.adaptor = SpeechAdaptor(config, hidden)
        self.group_model = GroupModel(config, hidden)
        self.speech_tokenizer = speech_tokenizer
        self.vocoder = vocoder
        self._cache_kwarg: Optional[str] = None
        self._index_cache: dict[Any, torch.Tensor] = {}
        if speech_tokenizer is not None and speech_tokenizer.n_units != config.n_units:
            raise ValueError(f"the speech tokenizer has {speech_tokenizer.n_units} units, the model {config.n_units}")
        if vocoder is not None and vocoder.dict.num_embeddings < config.n_units:
            raise ValueError(f"the vocoder knows {vocoder.dict.num_embeddings} units, the model {config.n_units}")
        if vocoder is not None and vocoder.hop * config.unit_rate_hz != vocoder.sample_rate:
            raise ValueError(f"the vocoder makes {vocoder.hop} samples per unit at {vocoder.sample_rate} Hz; "
                             f"the units are {config.unit_rate_hz} per second")

    # ---- placement ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def place(self, device: str, dtype: torch.dtype) -> "GroupFormer":
        """LLM and heads in `dtype`; speech tokenizer and vocoder stay float32."""
        self.llm.to(device=device, dtype=dtype)
        self.adaptor.to(device=device, dtype=dtype)
        self.group_model.to(device=device, dtype=dtype)
        for part in (self.speech_tokenizer, self.vocoder):
            if part is not None:
                part.to(device=device, dtype=torch.float32)
        return self

    # ---- the network ----------------------------------------------------------------------
    def embed(self, ids: torch.Tensor, groups: Optional[torch.Tensor]) -> torch.Tensor:
        """Token embeddings with each `<speech>` placeholder replaced by its group's adaptor
        output (groups in row-major placeholder order)."""
        embeds = self.llm.get_input_embeddings()(ids)
        if groups is None or groups.shape[0] == 0:
            return embeds
        # The callers (collate, Decoder) pair placeholders and groups one to one; counting them
        # here would cost a device synchronisation per decoding step.
        mask = (ids == self.special.speech).unsqueeze(-1)
        adapted = self.adaptor(groups.to(embeds.device)).to(embeds.dtype)
        return embeds.masked_scatter(mask, adapted)

    def hidden_states(self, embeds: torch.Tensor, attention_mask: Any = None, cache: Any = None,
                      **extra: Any) -> torch.Tensor:
        """The LLM's final (normalised) hidden states, (B, T, H). `extra` (position_ids, …) goes
        to the decoder as is."""
        decoder = self.llm.get_decoder()
        if self._cache_kwarg is None:
            import inspect

            params = inspect.signature(decoder.forward).parameters
            # transformers ≥ 5.x names it `cache`; earlier versions `past_key_values`
            self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        out = decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=cache is not None,
                      **{self._cache_kwarg: cache}, **extra)
        return out.last_hidden_state

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> Rendered:
        """A dialogue as this model's token ids and speech groups (chat.render)."""
        return render(self.tokenizer, messages, self.config.group_size, self.config.pad_unit,
                      add_generation_prompt=add_generation_prompt, special=self.special)

    def token_logits(self, hidden: torch.Tensor, only: Optional[list[int]] = None) -> torch.Tensor:
        """LM-head logits; `only` restricts them to a few token ids (cheap on a big vocab)."""
        head = self.llm.get_output_embeddings()
        if only is None:
            return head(hidden)
        key = (tuple(only), hidden.device)
        index = self._index_cache.get(key)
        if index is None:
            index = self._index_cache[key] = torch.tensor(only, device=hidden.device)
        bias = None if getattr(head, "bias", None) is None else head.bias[index]
        return F.linear(hidden, head.weight[index], bias)

    def unit_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.group_model(hidden.to(self.group_model.in_proj.weight.dtype))

    def forward(self, input_ids: torch.Tensor, groups: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.hidden_states(self.embed(input_ids, groups), attention_mask)

    # ---- building and files ---------------------------------------------------------------
    @classmethod
    def random(cls, size: str = "tiny", group_size: int = 5, seed: int = 0, device: str = "cpu",
               dtype: Union[str, torch.dtype, None] = None, **overrides: Any) -> "GroupFormer":
        """Random weights in a named backbone shape (latency profiling; no downloads)."""
        from transformers import AutoModelForCausalLM, Qwen2Config

        spec = named_shape(size)
        dtype = resolve_dtype(dtype, device)
        tokenizer = build_fallback_tokenizer()
        llm_kwargs = dict(spec["llm"])
        llm_kwargs.pop("model_type", None)
        vocab = llm_kwargs.pop("vocab_size") or -(-len(tokenizer) // 64) * 64
        llm_config = Qwen2Config(vocab_size=max(vocab, len(tokenizer)), **llm_kwargs,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 bos_token_id=None)
        heads = dict(spec["heads"], **{k: v for k, v in overrides.items() if k in spec["heads"]})
        config = GroupFormerConfig(group_size=group_size, hubert_layer=spec["hubert_layer"], shape=size,
                                   untrained=True, **heads)
        torch.manual_seed(seed)
        with torch.device(device):
            llm = AutoModelForCausalLM.from_config(llm_config, **{_dtype_kwarg(): dtype})
        speech_tokenizer = random_speech_tokenizer(spec["hubert"], spec["hubert_layer"], config.n_units, seed)
        vocoder = random_vocoder(spec["vocoder"], seed)
        torch.manual_seed(seed + 1)
        model = cls(config, llm, tokenizer, speech_tokenizer, vocoder)
        return model.place(device, dtype).eval()

    @classmethod
    def from_llm(cls, llm: Union[str, Path], config: Optional[GroupFormerConfig] = None, device: str = "cpu",
                 dtype: Union[str, torch.dtype, None] = None, speech_tokenizer: Optional[SpeechTokenizer] = None,
                 vocoder: Optional[UnitHiFiGAN] = None) -> "GroupFormer":
        """Start training from a pretrained causal LM folder (the paper: Qwen2-7B-Instruct):
        the speech tokens are added to its tokenizer and vocabulary, the heads are new."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = resolve_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(str(llm))
        model = AutoModelForCausalLM.from_pretrained(str(llm), **{_dtype_kwarg(): dtype})
        return cls(config or GroupFormerConfig(), model, tokenizer, speech_tokenizer, vocoder).place(device, dtype)

    def save_pretrained(self, folder: Union[str, Path]) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        defaults = GroupFormerConfig()
        config = GroupFormerConfig.from_dict(self.config.to_dict())
        for name in ("llm", "heads", "hubert", "kmeans", "vocoder", "vocoder_config"):
            setattr(config, name, getattr(defaults, name))
        self.llm.save_pretrained(str(folder / config.llm))
        self.tokenizer.save_pretrained(str(folder / config.llm))
        heads = {f"adaptor.{k}": v for k, v in self.adaptor.state_dict().items()}
        heads.update({f"group_model.{k}": v for k, v in self.group_model.state_dict().items()})
        save_file({k: v.detach().contiguous().cpu() for k, v in heads.items()}, str(folder / config.heads),
                  metadata={"format": "pt", "group_size": str(config.group_size)})
        if self.speech_tokenizer is not None:
            self.speech_tokenizer.save(folder / config.hubert, folder / config.kmeans)
        if self.vocoder is not None:
            self.vocoder.save(folder / config.vocoder, folder / config.vocoder_config)
        config.save(folder)

    @classmethod
    def from_pretrained(cls, folder: Union[str, Path], device: str = "cpu",
                        dtype: Union[str, torch.dtype, None] = None, hubert: Optional[str] = None,
                        kmeans: Optional[str] = None, vocoder: Optional[str] = None,
                        vocoder_config: Optional[str] = None) -> "GroupFormer":
        """A checkpoint folder: `groupformer.json`, the LLM and its tokenizer (Hugging Face
        format), the heads (safetensors), HuBERT + k-means, and the vocoder with its config.
        The keyword paths override the folder's speech tokenizer and vocoder files."""
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"GroupFormer checkpoint folder {folder} not found")
        config = GroupFormerConfig.load(folder)
        dtype = resolve_dtype(dtype, device)
        llm_dir = _resolve(folder, config.llm)
        tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
        llm = AutoModelForCausalLM.from_pretrained(str(llm_dir), **{_dtype_kwarg(): dtype})

        hubert_name = hubert or config.hubert
        hubert_path = _resolve(folder, hubert_name)
        kmeans_path = _resolve(folder, kmeans or config.kmeans)
        speech_tokenizer = None
        hubert_source = (str(hubert_path) if hubert_path.exists()
                         else hubert_name if _looks_like_hub_id(hubert_name) else None)  # e.g. slprl/mhubert-base-25hz
        if hubert_source and kmeans_path.exists():
            speech_tokenizer = load_speech_tokenizer(hubert_source, kmeans_path, config.hubert_layer,
                                                     config.hubert_normalize)
        elif hubert or kmeans:
            raise FileNotFoundError(f"speech tokenizer: {hubert_path} or {kmeans_path} not found")
        vocoder_path = _resolve(folder, vocoder or config.vocoder)
        vocoder_cfg = _resolve(folder, vocoder_config or config.vocoder_config)
        unit_vocoder = None
        if vocoder_path.exists() and vocoder_cfg.exists():
            unit_vocoder = load_vocoder(vocoder_path, vocoder_cfg)
        elif vocoder or vocoder_config:
            raise FileNotFoundError(f"vocoder: {vocoder_path} or {vocoder_cfg} not found")

        model = cls(config, llm, tokenizer, speech_tokenizer, unit_vocoder)
        state = load_file(str(_resolve(folder, config.heads)))
        adaptor = {k[len("adaptor."):]: v for k, v in state.items() if k.startswith("adaptor.")}
        group = {k[len("group_model."):]: v for k, v in state.items() if k.startswith("group_model.")}
        model.adaptor.load_state_dict(adaptor)
        model.group_model.load_state_dict(group)
        return model.place(device, dtype).eval()

    def describe(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.llm.parameters())
        return {"llm": type(self.llm).__name__, "llm_parameters": n, "hidden_size": self.config.llm_hidden_size,
                "group_size": self.config.group_size, "n_units": self.config.n_units,
                "shape": self.config.shape, "untrained": self.config.untrained,
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device)}
