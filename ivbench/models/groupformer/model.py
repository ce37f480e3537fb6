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
from typing import TYPE_CHECKING, Any, Optional, Union, cast
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, ModelFileError
from ...model_files import MissingModelFile, load_safetensors_file, state_dict_mismatch
from .chat import (
    Message,
    Rendered,
    SpecialIds,
    add_speech_tokens,
    build_fallback_tokenizer,
    render,
)
from .config import GroupFormerConfig
from .config import shape as named_shape
from .speech_tokenizer import (
    SpeechTokenizer,
    load_speech_tokenizer,
    random_speech_tokenizer,
)
from .vocoder import UnitHiFiGAN, load_vocoder, random_vocoder

if TYPE_CHECKING:  # transformers is imported where a model is built, not with this module
    from transformers import PreTrainedModel

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
        raise ConfigError(f"dtype {dtype!r}: use auto, float32, bfloat16 or float16") from None


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
            raise ConfigError(f"adaptor {cfg.adaptor!r}: use 'mlp' or 'linear'")

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


def check_parts(config: GroupFormerConfig, speech_tokenizer: Optional[SpeechTokenizer],
                vocoder: Optional[UnitHiFiGAN]) -> None:
    """The speech tokenizer and vocoder fit the model: as many units, at the model's unit rate
    (a ModelFileError naming the files that do not)."""
    rate = config.unit_rate_hz
    if speech_tokenizer is not None:
        where = getattr(speech_tokenizer, "source", "the speech tokenizer")
        if speech_tokenizer.n_units != config.n_units:
            raise ModelFileError(f"{where}: {speech_tokenizer.n_units} k-means units, the model {config.n_units}")
        if abs(speech_tokenizer.frame_rate - rate) > 1e-6:
            raise ModelFileError(f"{where}: HuBERT makes {speech_tokenizer.frame_rate:g} frames per second "
                                 f"(conv strides {list(speech_tokenizer.hubert.config.conv_stride)}); the model's "
                                 f"units are {rate} per second (unit_rate_hz)")
    if vocoder is not None:
        where = getattr(vocoder, "source", "the vocoder")
        if vocoder.dict.num_embeddings < config.n_units:
            raise ModelFileError(f"{where}: knows {vocoder.dict.num_embeddings} units, the model {config.n_units}")
        if vocoder.hop * rate != vocoder.sample_rate:
            raise ModelFileError(f"{where}: makes {vocoder.hop} samples per unit at {vocoder.sample_rate} Hz, "
                                 f"{vocoder.sample_rate / vocoder.hop:g} units per second; the model's units are "
                                 f"{rate} per second (unit_rate_hz)")


def _looks_like_hub_id(name: Optional[str]) -> bool:
    return name is not None and name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _load_llm(llm_dir: Path, dtype: torch.dtype) -> tuple[Any, PreTrainedModel]:
    """The checkpoint's tokenizer and causal LM (Hugging Face folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (llm_dir / "config.json").is_file():
        raise MissingModelFile(f"GroupFormer LLM folder {llm_dir} has no config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
        llm = AutoModelForCausalLM.from_pretrained(str(llm_dir), **{_dtype_kwarg(): dtype})
    except Exception as exc:  # transformers reports broken files in many exception types
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelFileError(f"GroupFormer LLM folder {llm_dir} cannot be loaded: {type(exc).__name__}: {text}") \
            from None
    return tokenizer, llm


def _load_speech_tokenizer(folder: Path, config: GroupFormerConfig, hubert: Optional[str],
                           kmeans: Optional[str]) -> Optional[SpeechTokenizer]:
    """HuBERT + k-means from the folder or the paths given; None where the folder has neither
    and none was given (a text-input checkpoint)."""
    hubert_name = hubert or config.hubert
    hubert_path = _resolve(folder, hubert_name)
    kmeans_path = _resolve(folder, kmeans or config.kmeans)
    hub_id = not hubert_path.exists() and _looks_like_hub_id(hubert_name)  # e.g. slprl/mhubert-base-25hz
    if not (hubert or kmeans or hubert_path.exists() or kmeans_path.exists() or hub_id):
        return None
    if not kmeans_path.exists():
        raise MissingModelFile(f"speech tokenizer: k-means file {kmeans_path} not found")
    return load_speech_tokenizer(hubert_name if hub_id else hubert_path, kmeans_path, config.hubert_layer,
                                 config.hubert_normalize, n_units=config.n_units)


def _input_embeddings(llm: PreTrainedModel) -> nn.Embedding:
    # transformers annotates get_input_embeddings() as any nn.Module; a causal LM's is an nn.Embedding.
    return cast(nn.Embedding, llm.get_input_embeddings())


class GroupFormer(nn.Module):
    def __init__(self, config: GroupFormerConfig, llm: PreTrainedModel, tokenizer: Any,
                 speech_tokenizer: Optional[SpeechTokenizer] = None, vocoder: Optional[UnitHiFiGAN] = None) -> None:
        super().__init__()
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer
        if add_speech_tokens(tokenizer):
            log.warning("the tokenizer had no speech tokens: added them with untrained embeddings")
        if _input_embeddings(llm).num_embeddings < len(tokenizer):
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
        check_parts(config, speech_tokenizer, vocoder)

    # ---- placement ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return _input_embeddings(self.llm).weight.device

    @property
    def dtype(self) -> torch.dtype:
        return _input_embeddings(self.llm).weight.dtype

    def place(self, device: str, dtype: torch.dtype) -> GroupFormer:
        """LLM and heads in `dtype`; speech tokenizer and vocoder stay float32."""
        # PreTrainedModel.to is declared with functools.wraps(nn.Module.to), which types it as the
        # unbound function (self required); the call is right.
        self.llm.to(device=device, dtype=dtype)  # type: ignore[call-arg]
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
        embeds = _input_embeddings(self.llm)(ids)
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
               dtype: Union[str, torch.dtype, None] = None, **overrides: Any) -> GroupFormer:
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
                 vocoder: Optional[UnitHiFiGAN] = None) -> GroupFormer:
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
                        vocoder_config: Optional[str] = None) -> GroupFormer:
        """A checkpoint folder: `groupformer.json`, the LLM and its tokenizer (Hugging Face
        format), the heads (safetensors), HuBERT + k-means, and the vocoder with its config.
        The keyword paths override the folder's speech tokenizer and vocoder files. A file that
        is missing, broken or does not fit the others is a ModelFileError naming it."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise MissingModelFile(f"GroupFormer checkpoint folder {folder} not found")
        config = GroupFormerConfig.load(folder)
        dtype = resolve_dtype(dtype, device)
        tokenizer, llm = _load_llm(_resolve(folder, config.llm), dtype)
        speech_tokenizer = _load_speech_tokenizer(folder, config, hubert, kmeans)
        vocoder_path = _resolve(folder, vocoder or config.vocoder)
        vocoder_cfg = _resolve(folder, vocoder_config or config.vocoder_config)
        unit_vocoder = None
        if vocoder_path.exists() or vocoder_cfg.exists() or vocoder or vocoder_config:
            unit_vocoder = load_vocoder(vocoder_path, vocoder_cfg)  # names whichever is missing

        model = cls(config, llm, tokenizer, speech_tokenizer, unit_vocoder)
        heads_path = _resolve(folder, config.heads)
        state = load_safetensors_file(heads_path, "GroupFormer heads")
        for prefix, part in (("adaptor.", model.adaptor), ("group_model.", model.group_model)):
            found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            problem = state_dict_mismatch(part.state_dict(), found)
            if problem:
                raise ModelFileError(f"GroupFormer heads {heads_path} do not fit {folder / 'groupformer.json'} "
                                     f"({prefix.rstrip('.')}): {problem}")
            part.load_state_dict(found)
        return model.place(device, dtype).eval()

    def describe(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.llm.parameters())
        return {"llm": type(self.llm).__name__, "llm_parameters": n, "hidden_size": self.config.llm_hidden_size,
                "group_size": self.config.group_size, "n_units": self.config.n_units,
                "shape": self.config.shape, "untrained": self.config.untrained,
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device)}
