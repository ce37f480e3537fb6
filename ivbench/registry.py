"""One registry for tasks, systems, metrics and voices.

Entries come from three places: built-ins (below and the shipped task files), installed
packages' entry points (group ``ivbench.<kind>``), and a spec naming code directly
(``my_pkg.mod:Obj`` or ``./my_file.py:Obj``). Looking a name up imports nothing heavy:
an entry is a "module:attribute" string until it is resolved, and a plugin's own heavy
imports belong in its ``load()``.

A spec may carry keyword arguments: ``name:key=value,key=value`` (values are parsed as
YAML scalars, so ``3``, ``0.5``, ``true`` and ``null`` have their types).
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Optional
from collections.abc import Callable

from .errors import IvbenchError, PluginError

KINDS = ("tasks", "systems", "metrics", "voices")

# name -> ("module:attribute", one-line description). Tasks are added from tasks/*.yaml.
BUILTINS: dict[str, dict[str, tuple[str, str]]] = {
    "systems": {
        "parrot": ("ivbench.systems.parrot:Parrot",
                   "calibration baseline: speaks the user turn's own text back, sentence by sentence"),
        "cascade": ("ivbench.systems.cascade:Cascade",
                    "Whisper tiny.en -> SmolLM2-135M-Instruct -> Piper joe, streamed every theta words (offline)"),
        "cascade-openai": ("ivbench.systems.cascade:CascadeOpenAI",
                           "Whisper -> an OpenAI-compatible endpoint (streamed) -> Piper; needs llm_model, base_url"),
        "groupformer": ("ivbench.systems.groupformer:GroupFormerSystem",
                        "IntrinsicVoice GroupFormer: LLM + grouped speech units, direct speech out"),
        "groupformer-text-first": ("ivbench.systems.groupformer:GroupFormerTextFirst",
                                   "GroupFormer writing its whole text reply before its speech (SpeechGPT style)"),
    },
    "voices": {
        "piper": ("ivbench.voices.piper:PiperVoice", "Piper VITS voice (bundled en_US joe medium)"),
        "kokoro": ("ivbench.voices.kokoro:KokoroVoice", "Kokoro-82M int8 ONNX (bundled voices)"),
        "espeak": ("ivbench.voices.espeak:EspeakVoice", "eSpeak NG formant voice through ctypes"),
    },
    "metrics": {
        "latency": ("ivbench.metrics.latency:LatencyMetric",
                    "first packet, first text, end of reply and real-time factor per turn"),
        "first_speech": ("ivbench.metrics.vad:FirstSpeech",
                         "first audible speech: first packet + Silero VAD onset inside the reply audio"),
        "transcript": ("ivbench.metrics.transcript:ReplyTranscript",
                       "Whisper transcript of the reply's speech (used by asr_wer and the judge)"),
        "user_transcript": ("ivbench.metrics.transcript:UserTranscript",
                            "Whisper transcript of the user turn's speech (what the judge reads)"),
        "asr_wer": ("ivbench.metrics.wer:AsrWer",
                    "WER/CER of the reply's speech transcript against the reply's own text"),
        "ref_wer": ("ivbench.metrics.wer:RefWer",
                    "WER/CER of the reply (transcript or text) against the task's reference answer"),
        "dnsmos": ("ivbench.metrics.mos.dnsmos:DNSMOS", "DNSMOS P.835 SIG/BAK/OVRL (speechmos, ONNX)"),
        "distillmos": ("ivbench.metrics.mos.distillmos:DistillMOS", "DistillMOS speech quality (torch)"),
        "utmos": ("ivbench.metrics.mos.utmos:UTMOS",
                  "UTMOS22 strong learner; needs checkpoint=/path (weights are not in any registry)"),
        "judge": ("ivbench.metrics.judge:JudgeScore",
                  "LLM judge per turn (llama-omni 1-5, content-style, mt-bench 1-10); needs --judge-model"),
        "judge_dialogue": ("ivbench.metrics.judge:DialogueJudge",
                           "LLM judge, one 1-5 score for a whole multi-turn dialogue; needs --judge-model"),
        "voicebench": ("ivbench.suites.metrics:VoiceBench",
                       "VoiceBench's scorers per subset (GPT score, sd-qa judge, MCQ, IFEval, refusal, BBH), overall"),
        "urobench": ("ivbench.suites.metrics:UroBench",
                     "URO-Bench's mark.py scorers per test set (GPT 1-5 x 20, Yes/No, Repeat WER), overall"),
        "big_bench_audio": ("ivbench.suites.metrics:BigBenchAudio",
                            "Big Bench Audio's LLM evaluator (CORRECT/INCORRECT vs the official answer), accuracy"),
    },
    "tasks": {
        "voicebench": ("ivbench.suites.voicebench:voicebench",
                       "VoiceBench (hlt-lab/voicebench; Apache-2.0): subset=NAME|leaderboard, path=DIR; scores "
                       "GPT score, sd-qa judge, MCQ/BBH accuracy, IFEval, advbench refusal, overall "
                       "(metric voicebench)"),
        "urobench": ("ivbench.suites.urobench:urobench",
                     "URO-Bench (Honggao/URO-Bench; MIT): subset=SET|basic-en|pro-en…, path=DIR; scores its mark.py "
                     "modes: GPT 1-5 x 20, Yes/No, multi-round, Repeat WER; overall (metric urobench)"),
        "big-bench-audio": ("ivbench.suites.bigbench_audio:big_bench_audio",
                            "Big Bench Audio (ArtificialAnalysis/big_bench_audio; MIT): path=DIR; scores accuracy by "
                            "its LLM evaluator (metric big_bench_audio)"),
    },
}


class RegistryError(PluginError):
    """An unknown or unloadable plugin, with what to do about it."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    target: str  # "module:attribute", or "path/to/file.py:attribute"
    origin: str  # "built-in", "package <dist>", "file <path>"
    description: str = ""


@dataclass(frozen=True)
class Spec:
    """A parsed command-line or YAML reference to a plugin, with its keyword arguments."""

    ref: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.kwargs)

    @property
    def label(self) -> str:
        if not self.kwargs:
            return self.ref
        return self.ref + ":" + ",".join(f"{k}={v}" for k, v in self.kwargs)


def parse_spec(text: str, extra: Optional[dict[str, Any]] = None) -> Spec:
    """``name``, ``name:k=v,…``, ``mod:Obj``, ``./file.py:Obj:k=v``.

    Options start at the first ``:``-separated part that holds ``=``; from there on, values may
    contain ``:`` (``voice=piper:joe``, ``base_url=http://h:8000/v1``); ``,`` separates options.
    """
    from .yaml_file import read_yaml_text

    text = text.strip()
    if not text:
        raise RegistryError("empty plugin name")
    parts = text.split(":")
    kwargs: dict[str, Any] = {}
    first_option = next((i for i, part in enumerate(parts) if i > 0 and "=" in part), None)
    if first_option is not None:
        options = ":".join(parts[first_option:])
        for item in options.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise RegistryError(f"{text!r}: option {item!r} is not key=value")
            # Bounded like a YAML file (nesting, aliases): a value is user input too.
            kwargs[key.strip()] = (read_yaml_text(value, f"{text!r} option {key.strip()!r}", RegistryError).data
                                   if value.strip() else "")
        parts = parts[:first_option]
    kwargs.update(extra or {})
    return Spec(":".join(parts), tuple(sorted(kwargs.items())))


def _builtin_task_entries() -> dict[str, Entry]:
    from .tasks.builtin import builtin_task_files

    return {
        name: Entry("tasks", name, str(path), "built-in", description)
        for name, (path, description) in builtin_task_files().items()
    }


def _entry_point_entries(kind: str) -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for ep in metadata.entry_points(group=f"ivbench.{kind}"):
        dist = getattr(ep, "dist", None)
        origin = f"package {dist.name}" if dist is not None else "package"
        found[ep.name] = Entry(kind, ep.name, ep.value, origin)
    return found


def entries(kind: str) -> list[Entry]:
    """Every entry of a kind; a package's entry point may not shadow a built-in name."""
    if kind not in KINDS:
        raise RegistryError(f"unknown plugin kind {kind!r}: one of {', '.join(KINDS)}")
    found = _entry_point_entries(kind)
    if kind == "tasks":
        found.update(_builtin_task_entries())
    for name, (target, description) in BUILTINS[kind].items():
        found[name] = Entry(kind, name, target, "built-in", description)
    return sorted(found.values(), key=lambda e: e.name)


def _looks_like_code_ref(ref: str) -> bool:
    return ":" in ref


def _file_module_name(path: Path) -> str:
    """The module name a plugin file is imported under: the same in every process and session
    (the manifest records a system's class by it), and distinct for two files of the same name."""
    import hashlib
    import re

    resolved = str(path.resolve())
    digest = hashlib.sha256(resolved.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem, flags=re.ASCII)
    return f"ivbench_plugin_{stem}_{digest}"


def _import_file(path: Path) -> Any:
    module_name = _file_module_name(path)
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise
    return module


# Modules imported as plugins (module name -> the file or module the user named), so that a bug
# raised from inside one can be blamed on that plugin rather than on ivbench.
PLUGIN_MODULES: dict[str, str] = {}


def plugin_of(module_name: str) -> Optional[str]:
    """The plugin reference whose code `module_name` is (its module or a submodule of its
    package); None for ivbench's own code and everything else."""
    if module_name == "ivbench" or module_name.startswith("ivbench."):
        return None
    for name, ref in PLUGIN_MODULES.items():
        package = name.split(".")[0]
        if module_name == name or module_name.startswith(package + "."):
            return ref
    return None


def plugin_of_file(filename: str) -> Optional[str]:
    """The plugin reference whose code is in file `filename` (a plugin file, or a file of a plugin
    module's package); None otherwise. For errors raised before any of the plugin's code runs
    (a SyntaxError names only its file)."""
    try:
        target = Path(filename).resolve()
    except (OSError, ValueError):
        return None
    for name, ref in PLUGIN_MODULES.items():
        if ref.endswith(".py") or "/" in ref:
            where = [Path(ref).expanduser().resolve()]
        else:
            try:
                found = importlib.util.find_spec(name.split(".")[0])
            except (ImportError, ValueError):
                continue
            if found is None or found.origin is None:
                continue
            origin = Path(found.origin).resolve()
            where = [origin, origin.parent] if found.submodule_search_locations else [origin]
        if any(target == place or (place.is_dir() and target.is_relative_to(place)) for place in where):
            return ref
    return None


def factory_options(factory: Any) -> list[tuple[str, Any, str]]:
    """(name, default, what it does) of each keyword `create` binds to `factory`, in signature order;
    what it does from the factory's `option_help`, where it has one. A default of
    `inspect.Parameter.empty` means the option is required."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature (a C callable)
        return []
    help_ = getattr(factory, "option_help", None) or {}
    return [(p.name, p.default, help_.get(p.name, "")) for p in parameters
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def load_target(target: str, kind: str = "plugin") -> Any:
    """Import "module:attr" or "file.py:attr" and return the attribute."""
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise RegistryError(f"{kind} {target!r}: expected 'module:Object' or 'file.py:Object'")
    if module_part.endswith(".py") or "/" in module_part:
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise RegistryError(f"{kind} {target!r}: file {path} not found")
        PLUGIN_MODULES.setdefault(_file_module_name(path), module_part)
        module = _import_file(path)
    else:
        if not module_part.startswith("ivbench."):
            PLUGIN_MODULES.setdefault(module_part, module_part)
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            raise RegistryError(
                f"{kind} {target!r}: cannot import {module_part!r} ({exc}); "
                "is the package installed in this environment?"
            ) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"{kind} {target!r}: {module_part} has no attribute {attr!r}") from None
    return obj


def split_variant(kind: str, ref: str) -> tuple[str, Optional[str]]:
    """``piper:joe`` -> ("piper", "joe") when "piper" is a registered name of `kind`."""
    head, sep, tail = ref.partition(":")
    if (sep and tail and ":" not in tail and "/" not in head and not head.endswith(".py")
            and head in {e.name for e in entries(kind)}):
        return head, tail
    return ref, None


def lookup(kind: str, ref: str) -> Entry:
    """The entry for a name or code reference; an unknown name suggests close matches."""
    ref = split_variant(kind, ref)[0]
    if kind == "tasks" and (ref.endswith((".yaml", ".yml", ".jsonl")) or Path(ref).is_file()):
        return Entry(kind, Path(ref).stem, ref, f"file {ref}")
    known = {e.name: e for e in entries(kind)}
    if ref in known:
        return known[ref]
    if _looks_like_code_ref(ref):
        module_part = ref.rpartition(":")[0]
        origin = f"file {module_part}" if module_part.endswith(".py") else f"module {module_part}"
        return Entry(kind, ref, ref, origin)
    close = difflib.get_close_matches(ref, list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    singular = kind[:-1]
    raise RegistryError(
        f"unknown {singular} {ref!r}.{hint} Known {kind}: {', '.join(sorted(known)) or 'none'}. "
        f"`ivbench list` shows them all; a plugin of your own is given as module:Object or file.py:Object."
    )


def resolve(kind: str, ref: str) -> tuple[Entry, Callable[..., Any]]:
    entry = lookup(kind, ref)
    if kind == "tasks" and entry.target.endswith((".yaml", ".yml", ".jsonl")):
        from .tasks.loader import load_task_file

        path = entry.target
        return entry, (lambda **options: load_task_file(path, **options))
    return entry, load_target(entry.target, kind[:-1])


def _option_hint(factory: Any, options: dict[str, Any]) -> str:
    """Close spellings of unknown options, and the options the factory does take."""
    params = [n for n, p in inspect.signature(factory).parameters.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in ("self", "variant")]
    hints = []
    for key in sorted(k for k in options if k not in params):
        close = difflib.get_close_matches(key, params, n=1, cutoff=0.6)
        if close:
            hints.append(f" Did you mean {close[0]!r} (not {key!r})?")
    takes = f" It takes: {', '.join(params)}." if params else " It takes no options."
    return "." + "".join(hints) + takes


def create(kind: str, spec: Spec) -> Any:
    """Build the plugin a spec names with the spec's keyword arguments."""
    ref, variant = split_variant(kind, spec.ref)
    entry, factory = resolve(kind, ref)
    options = spec.options if variant is None else {"variant": variant, **spec.options}
    if not callable(factory):
        raise RegistryError(f"{kind[:-1]} {spec.ref!r} ({entry.origin}): a {type(factory).__name__} object, "
                            "not a class or a function that makes one")
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise RegistryError(f"{kind[:-1]} {spec.ref!r} ({entry.origin}): bad options {options}: {exc}"
                            f"{_option_hint(factory, options)}") from None
    except ValueError:  # no introspectable signature (a C callable): let the call decide
        pass
    try:
        return factory(**options)
    except PluginError as exc:  # a plugin named among the options (a voice of a system): say whose
        raise RegistryError(f"{kind[:-1]} {spec.label!r} ({entry.origin}): {exc}") from None
    except IvbenchError:  # task files, model files…: their errors name their file already
        raise
    except ValueError as exc:
        # A plugin's constructor validates its options and raises ValueError for a bad one
        # (docs/architecture.md, "Plugins"): that is the user's to fix, so it is one line.
        raise RegistryError(f"{kind[:-1]} {spec.label!r} ({entry.origin}): {exc}") from None
