"""The configuration of `ivbench eval`, from a YAML file and command-line flags.

    task: mt-bench                      # or {name: mt-bench, categories: all}
    systems:
      - parrot
      - {name: ./my_system.py:MySystem, label: mine, speed: 2}
    voice: piper:joe                    # speaks the user turns
    mode: [s2s]                         # optional; default: each system's first mode
    out: runs/x
    limit: 10
    warmup: 1
    turn_timeout: 120
    device: auto
    seed: 0
    metrics: [latency, asr_wer, {name: judge, prompt: content-style}]   # what `eval` scores
    judge: {model: gpt-4o, base_url: null, n: 1, temperature: 0}     # key from the environment
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .errors import ConfigError, IvbenchError
from .registry import Spec, parse_spec
from .yaml_file import Where, got, kind, shown

DEFAULT_TASK = "demo"
DEFAULT_SYSTEMS = ("parrot", "cascade")
DEFAULT_VOICE = "piper:joe"

CONFIG_KEYS = {"task", "systems", "voice", "mode", "out", "limit", "warmup", "turn_timeout",
               "device", "seed", "cache_dir", "use_cache", "metrics", "judge"}
MODES = ("s2s", "s2t", "t2s", "t2t")
DEVICES = ("auto", "cpu", "cuda")




@dataclass
class SystemConfig:
    spec: Spec
    label: str


@dataclass
class EvalConfig:
    task: Spec = field(default_factory=lambda: parse_spec(DEFAULT_TASK))
    systems: list[SystemConfig] = field(default_factory=list)
    voice: Spec = field(default_factory=lambda: parse_spec(DEFAULT_VOICE))
    modes: list[str] = field(default_factory=list)
    out: Optional[Path] = None
    limit: Optional[int] = None
    warmup: int = 1
    turn_timeout: Optional[float] = 300.0
    device: str = "auto"
    seed: int = 0
    cache_dir: Optional[Path] = None
    use_cache: bool = True
    fresh: bool = False
    retry_failed: bool = False
    # Scoring after generation: None means the defaults (ivbench.scoring.DEFAULT_METRICS; no judge).
    metrics: Optional[list[Spec]] = None
    judge: Optional[dict[str, Any]] = None  # ivbench.judge.JudgeSettings keyword arguments

    def __post_init__(self) -> None:
        if not self.systems:
            self.systems = [system_config(s) for s in DEFAULT_SYSTEMS]
        check_labels(self.systems, self.modes)

    def identity(self) -> dict[str, Any]:
        """What the run measures; a resumed run must agree on all of it."""
        return {"task": self.task.label, "systems": [s.label for s in self.systems],
                "voice": self.voice.label, "mode": list(self.modes), "seed": self.seed}


def system_config(value: Union[str, dict[str, Any]], where: Union[str, Where] = "systems") -> SystemConfig:
    if isinstance(value, str):
        spec = _parse(value, where)
        return SystemConfig(spec, spec.label)
    if isinstance(value, dict):
        options = dict(value)
        ref = options.pop("name", None)
        if not isinstance(ref, str) or not ref.strip():
            raise ConfigError(f"{where}: a system mapping needs 'name' (a registered name or module:Object)"
                              + (f", {got(ref)}" if ref is not None else ""))
        label = options.pop("label", None)
        if label is not None and (not isinstance(label, str) or not label.strip()):
            at = where.at("label") if isinstance(where, Where) else f"{where}: 'label'"
            raise ConfigError(f"{at}: the system's name in the run: expected a string, {got(label)}")
        spec = _parse(ref, where, options)
        return SystemConfig(spec, label if label is not None else spec.label)
    raise ConfigError(f"{where}: a system is a name or a mapping with 'name', {got(value)}")


def _parse(text: str, where: Union[str, Where], extra: Optional[dict[str, Any]] = None) -> Spec:
    """parse_spec, with the place of a malformed reference in its error."""
    try:
        return parse_spec(text, extra=extra)
    except IvbenchError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _plugin_spec(value: Any, where: Union[str, Where]) -> Spec:
    if isinstance(value, str):
        return _parse(value, where)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        options = dict(value)
        return _parse(options.pop("name"), where, options)
    raise ConfigError(f"{where}: give a name, or a mapping with 'name' and options; {got(value)}")


def check_labels(systems: list[SystemConfig], modes: list[str], where: object = "") -> None:
    """Each system (in each mode) gets its own audio folder: labels may not share a file name
    (`run_store.name_key`: case, punctuation, the first 120 characters), nor take the user's."""
    from .store.run_store import name_key, safe_name

    labels = [s.label for s in systems]
    if len(modes) > 1:  # the runner's unit labels: "label@mode" when several modes run
        labels = [f"{label}@{mode}" for label in labels for mode in modes]
    prefix = f"{where}: " if str(where) else ""
    seen: dict[str, str] = {}
    for label in labels:
        key = name_key(label)
        if key == name_key("user"):
            raise ConfigError(f"{prefix}system label {label!r}: its audio folder {safe_name(label)!r} is where "
                              "the user's turns are kept; give the system another 'label'")
        first = seen.setdefault(key, label)
        if labels.count(label) > 1:
            raise ConfigError(f"{prefix}two systems share the label {label!r}; give each a distinct 'label'")
        if first != label:
            raise ConfigError(f"{prefix}system labels {first!r} and {label!r} would share the audio folder "
                              f"{safe_name(label)!r} (file names keep letters, digits and ._=- and ignore case); "
                              "give each system a distinct 'label'")


# --- the run config file ----------------------------------------------------------------------

def _number(value: Any, where: Where, integer: bool, low: float) -> Union[int, float]:
    ok = isinstance(value, int) or (not integer and isinstance(value, float))
    if isinstance(value, bool) or not ok:
        raise where.error(ConfigError, f"expected {'an integer' if integer else 'a number'}, {got(value)}")
    if value < low:
        raise where.error(ConfigError, f"must be at least {low:g}, got {value!r}")
    return value


def _read_int(key: str, low: int) -> Callable[[Any, Where], dict[str, Any]]:
    def read(value: Any, where: Where) -> dict[str, Any]:
        return {} if value is None else {key: _number(value, where, True, low)}
    return read


def _read_timeout(value: Any, where: Where) -> dict[str, Any]:
    return {} if value is None else {"turn_timeout": float(_number(value, where, False, 0))}


def _read_path(key: str) -> Callable[[Any, Where], dict[str, Any]]:
    def read(value: Any, where: Where) -> dict[str, Any]:
        if value is None or value == "":
            return {}
        if not isinstance(value, str) or "\x00" in value:
            raise where.error(ConfigError, f"expected a folder (a path), {got(value)}")
        return {key: Path(value)}  # relative to the working directory, like the flag
    return read


def _read_plugin(key: str) -> Callable[[Any, Where], dict[str, Any]]:
    def read(value: Any, where: Where) -> dict[str, Any]:
        return {key: _plugin_spec(value, where)}
    return read


def _read_systems(value: Any, where: Where) -> dict[str, Any]:
    systems = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(systems, list) or not systems:
        raise where.error(ConfigError, "must be a non-empty list of systems" + (f", {got(value)}" if systems else ""))
    return {"systems": [system_config(s, where.at(i)) for i, s in enumerate(systems)]}


def _read_modes(value: Any, where: Where) -> dict[str, Any]:
    modes = [value] if isinstance(value, str) else value
    if not isinstance(modes, list) or not modes:
        raise where.error(ConfigError, f"must be a mode or a list of modes ({', '.join(MODES)}), {got(value)}")
    for i, mode in enumerate(modes):
        if not isinstance(mode, str) or mode.lower() not in MODES:
            what = shown(mode, 20) if isinstance(mode, str) else kind(mode)
            raise where.at(i).error(ConfigError, f"unknown mode {what}: use one of {', '.join(MODES)}")
    return {"modes": [m.lower() for m in modes]}


def _read_device(value: Any, where: Where) -> dict[str, Any]:
    if not isinstance(value, str) or value.lower() not in DEVICES:
        raise where.error(ConfigError, f"expected one of {', '.join(DEVICES)}, {got(value)}")
    return {"device": value.lower()}


def _read_use_cache(value: Any, where: Where) -> dict[str, Any]:
    if not isinstance(value, bool):
        raise where.error(ConfigError, f"expected true or false, {got(value)}")
    return {"use_cache": value}


def _read_metrics(value: Any, where: Where) -> dict[str, Any]:
    metrics = [m for m in value.split(",") if m.strip()] if isinstance(value, str) else value
    if not isinstance(metrics, list):
        raise where.error(ConfigError, f"expected a list of metric names or mappings, {got(value)}")
    specs = [_plugin_spec(m, where.at(i)) for i, m in enumerate(metrics)]
    from . import registry

    for i, spec in enumerate(specs):
        try:  # checked now (names, options, a judge's prompt): scoring runs only after generation
            registry.create("metrics", spec)
        except IvbenchError as exc:
            raise where.at(i).error(ConfigError, str(exc)) from None
    return {"metrics": specs}


def _read_judge(value: Any, where: Where) -> dict[str, Any]:
    judge = {"model": value} if isinstance(value, str) else value
    if not isinstance(judge, dict) or not judge.get("model"):
        raise where.error(ConfigError, "must be a mapping with at least 'model' "
                                       "(and base_url, n, temperature, concurrency, retries, prices…)")
    if "api_key" in judge:
        raise where.at("api_key").error(ConfigError, "keys are read from the environment only; "
                                                     "set api_key_env to the variable's name")
    from .judge.settings import JudgeSettings

    try:  # checked now: a misspelt option must not wait until the run has been generated
        JudgeSettings(**judge)
    except (TypeError, ValueError) as exc:  # JudgeConfigError is a ValueError; float("x") too
        raise where.error(ConfigError, str(exc)) from None
    return {"judge": dict(judge)}


READERS: dict[str, Callable[[Any, Where], dict[str, Any]]] = {
    "task": _read_plugin("task"), "voice": _read_plugin("voice"), "systems": _read_systems,
    "mode": _read_modes, "out": _read_path("out"), "cache_dir": _read_path("cache_dir"),
    "limit": _read_int("limit", 1), "warmup": _read_int("warmup", 0), "seed": _read_int("seed", 0),
    "turn_timeout": _read_timeout, "device": _read_device, "use_cache": _read_use_cache,
    "metrics": _read_metrics, "judge": _read_judge,
}
assert set(READERS) == CONFIG_KEYS


def load_config_file(path: Union[str, Path]) -> dict[str, Any]:
    """Read a run YAML into EvalConfig keyword arguments (not yet merged with flags).

    Every key is checked now, before anything is generated; an error names the file, the line
    and the field (``run.yaml:4: field 'systems[1].label': expected a string, got a list``).
    """
    from .yaml_file import read_yaml_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    doc = read_yaml_file(path, ConfigError)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config is a YAML mapping of {', '.join(sorted(CONFIG_KEYS))}; "
                          f"{got(data)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in CONFIG_KEYS:
            import difflib

            close = difflib.get_close_matches(key, sorted(CONFIG_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise doc.where(key).error(ConfigError, f"unknown key{hint}; keys: {', '.join(sorted(CONFIG_KEYS))}")
        kwargs.update(READERS[key](value, doc.where(key)))
    if "systems" in kwargs:
        check_labels(kwargs["systems"], kwargs.get("modes", []), doc.where("systems"))
    return kwargs
