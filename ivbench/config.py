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
from typing import Any, Optional, Union

from .errors import ConfigError
from .registry import Spec, parse_spec

DEFAULT_TASK = "demo"
DEFAULT_SYSTEMS = ("parrot", "cascade")
DEFAULT_VOICE = "piper:joe"

CONFIG_KEYS = {"task", "systems", "voice", "mode", "out", "limit", "warmup", "turn_timeout",
               "device", "seed", "cache_dir", "use_cache", "metrics", "judge"}




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

    def identity(self) -> dict[str, Any]:
        """What the run measures; a resumed run must agree on all of it."""
        return {"task": self.task.label, "systems": [s.label for s in self.systems],
                "voice": self.voice.label, "mode": list(self.modes), "seed": self.seed}


def system_config(value: Union[str, dict[str, Any]], where: str = "systems") -> SystemConfig:
    if isinstance(value, str):
        spec = parse_spec(value)
        return SystemConfig(spec, spec.label)
    if isinstance(value, dict):
        options = dict(value)
        ref = options.pop("name", None)
        if not isinstance(ref, str):
            raise ConfigError(f"{where}: a system mapping needs 'name' (a registered name or module:Object)")
        label = options.pop("label", None)
        spec = parse_spec(ref, extra=options)
        return SystemConfig(spec, str(label) if label else spec.label)
    raise ConfigError(f"{where}: a system is a name or a mapping with 'name', got {value!r}")


def _plugin_spec(value: Any, where: str) -> Spec:
    if isinstance(value, str):
        return parse_spec(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        options = dict(value)
        return parse_spec(options.pop("name"), extra=options)
    raise ConfigError(f"{where}: give a name, or a mapping with 'name' and options")


def load_config_file(path: Union[str, Path]) -> dict[str, Any]:
    """Read a run YAML into EvalConfig keyword arguments (not yet merged with flags)."""
    from .yaml_file import read_yaml_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    data = read_yaml_file(path, ConfigError) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config is a YAML mapping of {', '.join(sorted(CONFIG_KEYS))}")
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        import difflib

        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, sorted(CONFIG_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{path}: unknown key {key!r}{hint}; keys: {', '.join(sorted(CONFIG_KEYS))}")
    kwargs: dict[str, Any] = {}
    if "task" in data:
        kwargs["task"] = _plugin_spec(data["task"], f"{path}: 'task'")
    if "voice" in data:
        kwargs["voice"] = _plugin_spec(data["voice"], f"{path}: 'voice'")
    if "systems" in data:
        systems = data["systems"]
        if isinstance(systems, (str, dict)):
            systems = [systems]
        if not isinstance(systems, list) or not systems:
            raise ConfigError(f"{path}: 'systems' must be a non-empty list")
        kwargs["systems"] = [system_config(s, f"{path}: 'systems[{i}]'") for i, s in enumerate(systems)]
    if "mode" in data:
        modes = data["mode"]
        modes = [modes] if isinstance(modes, str) else modes
        if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
            raise ConfigError(f"{path}: 'mode' must be a mode or a list of modes (s2s, s2t, t2s, t2t), "
                              f"got {data['mode']!r}")
        kwargs["modes"] = list(modes)
    for key, typ in (("limit", int), ("warmup", int), ("seed", int), ("turn_timeout", float)):
        if key in data and data[key] is not None:
            try:
                kwargs[key] = typ(data[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: '{key}' must be a number, got {data[key]!r}") from None
    for key, low in (("limit", 1), ("warmup", 0)):
        if key in kwargs and kwargs[key] < low:
            raise ConfigError(f"{path}: '{key}' must be at least {low}, got {kwargs[key]!r}")
    for key in ("out", "cache_dir"):
        if data.get(key):
            kwargs[key] = Path(str(data[key]))  # relative to the working directory, like the flag
    if "device" in data:
        kwargs["device"] = str(data["device"])
    if "use_cache" in data:
        kwargs["use_cache"] = bool(data["use_cache"])
    if "metrics" in data:
        metrics = data["metrics"]
        if isinstance(metrics, str):
            metrics = [m for m in metrics.split(",") if m.strip()]
        if not isinstance(metrics, list):
            raise ConfigError(f"{path}: 'metrics' must be a list of metric names or mappings")
        kwargs["metrics"] = [_plugin_spec(m, f"{path}: 'metrics[{i}]'") for i, m in enumerate(metrics)]
    if "judge" in data:
        judge = data["judge"]
        if isinstance(judge, str):
            judge = {"model": judge}
        if not isinstance(judge, dict) or not judge.get("model"):
            raise ConfigError(f"{path}: 'judge' must be a mapping with at least 'model' "
                              "(and base_url, n, temperature, concurrency, retries, prices…)")
        if "api_key" in judge:
            raise ConfigError(f"{path}: 'judge.api_key': keys are read from the environment only; "
                              "set api_key_env to the variable's name")
        from .judge.settings import JudgeConfigError, JudgeSettings

        try:  # checked now: a misspelt option must not wait until the run has been generated
            JudgeSettings(**judge)
        except (TypeError, JudgeConfigError) as exc:
            raise ConfigError(f"{path}: 'judge': {exc}") from None
        kwargs["judge"] = dict(judge)
    return kwargs
