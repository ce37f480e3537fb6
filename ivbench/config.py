"""The run configuration: each option declared once (docs/architecture.md, "Run configuration").

An option is a field of `EvalConfig` (its name, type and default) carrying an `Option` (its YAML
key, its command-line flag, its help, how a given value is read and checked, and whether it is
part of the run's identity). The command line (`ivbench eval` and `ivbench score` flags), the
run YAML, validation, resuming and the manifest all derive from these fields; the judge's
options are the fields of `ivbench.judge.JudgeSettings` in the same way. A run YAML holds the
same settings as the flags, and flags given on the command line win:

    task: mt-bench                      # or {name: mt-bench, categories: all}
    systems:
      - parrot
      - {name: ./my_system.py:MySystem, label: mine, speed: 2}
      - {name: moshi_ivbench:Moshi, python: /envs/moshi/bin/python, resources: {num_gpus: 1}}
    voice: piper:joe                    # speaks the user turns
    mode: [s2s]                         # optional; default: each system's first mode; all: every mode
    out: runs/x
    limit: 10
    warmup: 1
    turn_timeout: 120
    device: auto
    seed: 0
    metrics: [latency, asr_wer, {name: judge, prompt: content-style}]   # what `eval` scores
    judge: {model: gpt-4o, base_url: null, n: 1, temperature: 0}     # key from the environment
    workers: 4                          # Ray workers (default: one worker process, no Ray)
    ray_address: auto                   # join a running Ray cluster instead of starting one
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union
from collections.abc import Callable

from .errors import ConfigError, IvbenchError
from .registry import Spec, parse_spec
from .yaml_file import Where, got, kind, shown

if TYPE_CHECKING:
    from .judge.settings import JudgeSettings

DEFAULT_SYSTEMS = ("parrot", "cascade")
MODES = ("s2s", "s2t", "t2s", "t2t")
ALL_MODES = "all"  # every mode each system declares
DEVICES = ("auto", "cpu", "cuda")


class Flag:
    """Where a command-line value came from, for errors (a run YAML's place is a `Where`)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def at(self, *keys: object) -> Flag:
        return self

    def __str__(self) -> str:
        return self.flag

    def error(self, cls: type[Exception], message: str) -> Exception:
        return cls(f"{self.flag}: {message}")


Place = Union[Where, Flag]
Reader = Callable[[Any, Place], Any]


@dataclass(frozen=True)
class Option:
    """How a run option is given. Its name, type and default are its `EvalConfig` field's."""

    help: str
    read: Reader  # a YAML or flag value -> the field's value; raises ConfigError naming the place
    key: str = ""  # the YAML key and the manifest's name; "" -> the field's name
    flag: Optional[str] = None  # the command-line flag; None: YAML only
    click: dict[str, Any] = field(default_factory=dict)  # type, multiple, metavar, envvar… for click
    identity: bool = False  # part of what the run measures: resuming must agree on it
    score: bool = False  # also an option of `ivbench score`
    score_help: str = ""  # its help there, where `help` speaks of generating ("" -> `help`)
    yaml: bool = True  # False: an action of one command (--fresh), not a setting of the run
    show: Callable[[Any], Any] = lambda value: value  # the value as the manifest records it


def option(default: Any = dataclasses.MISSING, *, factory: Optional[Callable[[], Any]] = None,
           **info: Any) -> Any:
    """An `EvalConfig` field that is a run option (see `Option` for `info`)."""
    metadata = {"option": Option(**info)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# --- readers: a YAML or flag value -> a typed value, or a ConfigError naming the place -------------

def _number(value: Any, where: Place, integer: bool, low: float) -> Union[int, float]:
    ok = isinstance(value, int) or (not integer and isinstance(value, float))
    if isinstance(value, bool) or not ok:
        raise where.error(ConfigError, f"expected {'an integer' if integer else 'a number'}, {got(value)}")
    if value < low:
        raise where.error(ConfigError, f"must be at least {low:g}, got {value!r}")
    return value


def read_int(low: int) -> Reader:
    return lambda value, where: None if value is None else int(_number(value, where, True, low))


def read_timeout(value: Any, where: Place) -> Optional[float]:
    """Seconds; 0 (or null) means no limit."""
    if value is None:
        return None
    seconds = float(_number(value, where, False, 0))
    return seconds or None


def read_path(value: Any, where: Place) -> Optional[Path]:
    if value is None or value == "":
        return None
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or "\x00" in value:
        raise where.error(ConfigError, f"expected a folder (a path), {got(value)}")
    return Path(value)  # relative to the working directory, in a file as on the command line


def read_bool(value: Any, where: Place) -> bool:
    if not isinstance(value, bool):
        raise where.error(ConfigError, f"expected true or false, {got(value)}")
    return value


def _parse(text: str, where: Union[str, Place], extra: Optional[dict[str, Any]] = None) -> Spec:
    """parse_spec, with the place of a malformed reference in its error."""
    try:
        return parse_spec(text, extra=extra)
    except IvbenchError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_plugin(value: Any, where: Place) -> Spec:
    """A plugin: `name`, `name:key=value,…`, or a mapping with `name` and options."""
    if isinstance(value, Spec):
        return value
    if isinstance(value, str):
        return _parse(value, where)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        options = dict(value)
        return _parse(options.pop("name"), where, options)
    raise where.error(ConfigError, f"give a name, or a mapping with 'name' and options; {got(value)}")


@dataclass
class SystemConfig:
    spec: Spec
    label: str
    # The interpreter its worker runs (ivbench installed there), so systems whose dependencies
    # conflict are compared in one run; None: ivbench's own (docs/architecture.md, "Workers").
    python: Optional[str] = None
    # What each of its Ray actors asks the cluster for (num_cpus, num_gpus, memory, custom
    # resources); None: one GPU on CUDA, one CPU otherwise.
    resources: Optional[dict[str, float]] = None


def _at(where: Union[str, Place], key: str) -> str:
    return str(where.at(key)) if isinstance(where, (Where, Flag)) else f"{where}: '{key}'"


def _read_python(value: Any, where: Union[str, Place]) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigError(f"{_at(where, 'python')}: the interpreter the system's worker runs "
                          f"(e.g. /envs/moshi/bin/python, with ivbench installed there): expected a path, {got(value)}")
    return value


def _read_resources(value: Any, where: Union[str, Place]) -> Optional[dict[str, float]]:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{_at(where, 'resources')}: what each Ray worker of the system needs, e.g. "
                          f"{{num_gpus: 1, num_cpus: 4}}: expected a mapping, {got(value)}")
    for key, amount in value.items():
        ok = isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount >= 0
        if not isinstance(key, str) or not ok:
            raise ConfigError(f"{_at(where, 'resources')}: {key!r}: expected a resource name and a number >= 0, "
                              f"{got(amount)}")
    return {key: float(amount) for key, amount in value.items()}


def system_config(value: Union[str, dict[str, Any]], where: Union[str, Place] = "systems") -> SystemConfig:
    """A system entry: `name:key=value,…`, or a mapping with `name`, an optional `label`, optional
    `python` and `resources` (its workers'), and options."""
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
            raise ConfigError(f"{_at(where, 'label')}: the system's name in the run: expected a string, {got(label)}")
        python = _read_python(options.pop("python", None), where)
        resources = _read_resources(options.pop("resources", None), where)
        spec = _parse(ref, where, options)
        return SystemConfig(spec, label if label is not None else spec.label, python, resources)
    raise ConfigError(f"{where}: a system is a name or a mapping with 'name', {got(value)}")


def system_identity(systems: list[SystemConfig]) -> dict[str, Any]:
    """Label -> the code, options and interpreter it names, as JSON reads them back from a manifest."""
    import json

    found = {s.label: {"system": s.spec.ref, "options": s.spec.options, "python": s.python} for s in systems}
    return json.loads(json.dumps(found, sort_keys=True, default=str))


def read_systems(value: Any, where: Place) -> list[SystemConfig]:
    systems = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(systems, (list, tuple)) or not systems:
        raise where.error(ConfigError, "must be a non-empty list of systems" + (f", {got(value)}" if systems else ""))
    return [s if isinstance(s, SystemConfig) else system_config(s, where.at(i)) for i, s in enumerate(systems)]


def read_modes(value: Any, where: Place) -> list[str]:
    modes = [value] if isinstance(value, str) else value
    if not isinstance(modes, (list, tuple)) or not modes:
        raise where.error(ConfigError, f"must be a mode or a list of modes ({', '.join(MODES)}, or {ALL_MODES}), "
                                       f"{got(value)}")
    for i, mode in enumerate(modes):
        if not isinstance(mode, str) or mode.lower() not in (*MODES, ALL_MODES):
            what = shown(mode, 20) if isinstance(mode, str) else kind(mode)
            raise where.at(i).error(ConfigError, f"unknown mode {what}: use one of {', '.join(MODES)} or {ALL_MODES}")
    return [m.lower() for m in modes]


def read_device(value: Any, where: Place) -> str:
    if not isinstance(value, str) or value.lower() not in DEVICES:
        raise where.error(ConfigError, f"expected one of {', '.join(DEVICES)}, {got(value)}")
    return value.lower()


def read_metrics(value: Any, where: Place) -> Optional[list[Spec]]:
    """A list of metrics (names, `name:key=value`, mappings); on the command line one string,
    separated by ',' (or by ';' when an option value holds a ',')."""
    if value is None:
        return None
    if isinstance(value, str):
        separator = ";" if ";" in value else ","
        names = [m for m in value.split(separator) if m.strip()]
        if not names:  # `--metrics "$UNSET"`: scoring nothing would wipe the run's scores.jsonl
            raise where.error(ConfigError, f"no metric named in {value!r}: give at least one (`ivbench list "
                                           "metrics`), or leave the option out for the default metrics")
        value = names
    if not isinstance(value, (list, tuple)):
        raise where.error(ConfigError, f"expected a list of metric names or mappings, {got(value)}")
    specs = [read_plugin(m, where.at(i)) for i, m in enumerate(value)]
    from . import registry

    for i, spec in enumerate(specs):
        try:  # checked now (names, options, a judge's prompt): scoring runs only after generation
            registry.create("metrics", spec)
        except IvbenchError as exc:
            raise where.at(i).error(ConfigError, str(exc)) from None
    from .scoring.plan import plan_metrics

    try:  # and together (two transcript metrics for one reader), before anything is generated
        plan_metrics(specs)
    except IvbenchError as exc:
        raise where.error(ConfigError, str(exc)) from None
    return specs


def read_judge(value: Any, where: Place) -> Optional[JudgeSettings]:
    """The judge: a model name, or a mapping of `JudgeSettings` fields (`prices: [in, out]` is
    read as price_in and price_out)."""
    from .judge.settings import JudgeSettings

    if value is None or isinstance(value, JudgeSettings):
        return value
    given = {"model": value} if isinstance(value, str) else value
    if not isinstance(given, dict) or not given.get("model"):
        raise where.error(ConfigError, "must be a mapping with at least 'model' (and base_url, n, temperature, "
                                       "max_tokens, timeout, concurrency, retries, price_in, price_out…)")
    if "api_key" in given:
        raise where.at("api_key").error(ConfigError, "keys are read from the environment only; "
                                                     "set api_key_env to the variable's name")
    # Values of any type: JudgeSettings checks and converts each (a wrong one is a ConfigError below).
    judge: dict[str, Any] = dict(given)
    if "prices" in judge:
        prices = judge.pop("prices")
        if not isinstance(prices, (list, tuple)) or len(prices) != 2:
            raise where.at("prices").error(ConfigError, f"expected [input, output] USD per 1M tokens, {got(prices)}")
        judge["price_in"], judge["price_out"] = prices
    known = {f.name for f in dataclasses.fields(JudgeSettings)}
    unknown = sorted(set(judge) - known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise where.at(unknown[0]).error(ConfigError,
                                         f"not a judge setting{hint}; settings: {', '.join(sorted(known))}")
    try:  # checked now: a misspelt or impossible value must not wait until the run has been generated
        return JudgeSettings(**judge)
    except (TypeError, ValueError) as exc:  # JudgeConfigError is a ValueError; float("x") too
        raise where.error(ConfigError, str(exc)) from None


def read_ray_address(value: Any, where: Place) -> Optional[str]:
    """`auto` (the cluster this machine belongs to), `ray://host:port` or a head's `host:port`."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value or not (value == "auto" or ":" in value):
        raise where.error(ConfigError, f"expected auto, ray://host:port or host:port, {got(value)}")
    return value


def _labels(systems: list[SystemConfig]) -> list[str]:
    return [s.label for s in systems]


# --- the configuration -----------------------------------------------------------------------------

@dataclass
class EvalConfig:
    """Everything `ivbench eval` runs with (and, for the fields marked `score`, `ivbench score`)."""

    task: Spec = option(factory=lambda: parse_spec("demo"), flag="--task", read=read_plugin, identity=True,
                        show=lambda spec: spec.label,
                        help="Task name, task file (.yaml/.jsonl) or name:option=value (e.g. mt-bench:categories=all).")
    systems: list[SystemConfig] = option(
        factory=lambda: [system_config(s) for s in DEFAULT_SYSTEMS], flag="--system",
        click={"multiple": True, "metavar": "SYSTEM"}, read=read_systems, identity=True, show=_labels,
        help="System to test (repeatable): a name, name:key=value,…, module:Object or ./file.py:Object.")
    voice: Spec = option(factory=lambda: parse_spec("piper:joe"), flag="--voice", read=read_plugin, identity=True,
                         show=lambda spec: spec.label, help="Voice that speaks the user turns.")
    modes: list[str] = option(factory=list, key="mode", flag="--mode", read=read_modes, identity=True, show=list,
                              click={"multiple": True, "type": ("choice", (*MODES, ALL_MODES))},
                              help=f"Modality (repeatable); '{ALL_MODES}': every mode each system declares. "
                                   "Default: each system's first declared mode.")
    out: Optional[Path] = option(None, flag="--out", read=read_path, show=lambda p: None if p is None else str(p),
                                 click={"type": ("path", "dir")},
                                 help="Run directory. Default: runs/<task>__<systems>; the same command again "
                                      "resumes it.")
    limit: Optional[int] = option(None, flag="--limit", read=read_int(1), click={"type": ("int", 1)},
                                  help="Only the first N dialogues.")
    warmup: int = option(1, flag="--warmup", read=read_int(0), click={"type": ("int", 0)},
                         help="Turns run before measuring and not recorded.")
    turn_timeout: Optional[float] = option(300.0, flag="--turn-timeout", read=read_timeout,
                                           click={"type": ("float", 0)},
                                           help="Seconds a turn may take before it is recorded as timed out "
                                                "(0: no limit).")
    device: str = option("auto", flag="--device", read=read_device, score=True,
                         click={"type": ("choice", DEVICES)}, help="Where systems and metrics run.",
                         score_help="Where metrics run (auto: the GPU if there is one).")
    seed: int = option(0, flag="--seed", read=read_int(0), identity=True, click={"type": ("int", 0)},
                       help="Seed of every random choice (each dialogue gets its own, derived from it).")
    cache_dir: Optional[Path] = option(None, flag="--cache-dir", read=read_path, score=True,
                                       show=lambda p: None if p is None else str(p), click={"type": ("path", "dir")},
                                       help="Where caches live (default $IVBENCH_CACHE_DIR or ~/.cache/ivbench).")
    use_cache: bool = option(True, flag="--cache/--no-cache", read=read_bool, score=True,
                             help="Read caches (user-turn speech, scores); --no-cache recomputes everything.",
                             score_help="Read the score caches; --no-cache recomputes every metric.")
    metrics: Optional[list[Spec]] = option(
        None, flag="--metrics", read=read_metrics, score=True,
        show=lambda specs: None if specs is None else [s.label for s in specs],
        click={"envvar": "IVBENCH_METRICS", "show_envvar": True, "metavar": "METRICS"},
        help="Metrics (name or name:key=value), separated by ',' (or by ';' when an option value holds a ','). "
             "Default: latency, first_speech, asr_wer, ref_wer, dnsmos, judge, judge_dialogue, and distillmos "
             "on a GPU.")
    # The judge's flags are JudgeSettings' fields (--judge-model, …); in YAML, a `judge:` mapping.
    judge: Optional[JudgeSettings] = option(None, read=read_judge, score=True,
                                              show=lambda j: None if j is None else j.to_json(),
                                              help="The LLM judge (see JudgeSettings).")
    # Where systems (and metrics) run (docs/architecture.md, "Workers"). Not part of the identity:
    # a run made with 4 workers resumes with 1, and the other way round.
    workers: Optional[int] = option(
        None, flag="--workers", read=read_int(1), score=True, click={"type": ("int", 1)},
        help="Run on N Ray workers: N actors of a local Ray cluster started for the run, or of --ray-address's "
             "cluster (needs pip install 'ivbench[ray]'). Default: one worker process on this machine, no Ray.")
    ray_address: Optional[str] = option(
        None, flag="--ray-address", read=read_ray_address, score=True, click={"metavar": "ADDRESS"},
        help="Join an existing Ray cluster (auto, or ray://host:port). Without --workers: one worker per GPU for a "
             "system on CUDA, one per node otherwise.",
        score_help="Join an existing Ray cluster (auto, or ray://host:port). Without --workers: one scoring worker "
                   "per GPU when scoring on CUDA, one per node otherwise.")
    in_process: bool = option(False, flag="--in-process", read=read_bool, click={"is_flag": True},
                              help="Run systems inside ivbench's own process, as a debugger sees them (default: each "
                                   "system runs in a worker process, so a crashing system fails only its dialogue).")
    fresh: bool = option(False, flag="--fresh", read=read_bool, yaml=False, click={"is_flag": True},
                         help="Discard an existing run in --out instead of resuming it.")
    retry_failed: bool = option(False, flag="--retry-failed", read=read_bool, yaml=False, click={"is_flag": True},
                                help="On resume, redo dialogues that have failed turns.")

    def __post_init__(self) -> None:
        check_labels(self.systems, self.modes)
        if self.in_process and (self.workers is not None or self.ray_address is not None):
            raise ConfigError("--in-process runs systems in ivbench's own process; it cannot be combined with "
                              "--workers or --ray-address (Ray workers)")

    @property
    def uses_ray(self) -> bool:
        return self.workers is not None or self.ray_address is not None

    def identity(self) -> dict[str, Any]:
        """What the run measures; a resumed run must agree on all of it. Besides the identity
        options: what each system label runs (`system_options`), since a label alone does not
        say it (`{name: cascade, label: mine, theta: 9}` resumed with theta 3 would mix two systems)."""
        found = {opt.key or f.name: opt.show(getattr(self, f.name)) for f, opt in options() if opt.identity}
        return {**found, "system_options": system_identity(self.systems)}

    def to_manifest(self) -> dict[str, Any]:
        """Every setting of the run, as the manifest records it (the judge's key never appears)."""
        return {opt.key or f.name: opt.show(getattr(self, f.name)) for f, opt in options() if opt.yaml}


def options(score_only: bool = False) -> list[tuple[dataclasses.Field, Option]]:
    """EvalConfig's fields with their Option, in declaration order."""
    found = [(f, f.metadata["option"]) for f in dataclasses.fields(EvalConfig) if "option" in f.metadata]
    return [(f, o) for f, o in found if o.score or not score_only]


def yaml_keys() -> dict[str, str]:
    """YAML key -> EvalConfig field name."""
    return {opt.key or f.name: f.name for f, opt in options() if opt.yaml}


def check_labels(systems: list[SystemConfig], modes: list[str], where: object = "") -> None:
    """Each system (in each mode) gets its own audio folder: labels may not share a file name
    (`run_store.name_key`: case, punctuation, the first 120 characters), nor take the user's."""
    from .store.run_store import name_key, safe_name

    labels = [s.label for s in systems]
    if len(modes) > 1 or ALL_MODES in modes:  # the runner's unit labels: "label@mode"
        labels = [f"{label}@{mode}" for label in labels for mode in (MODES if ALL_MODES in modes else modes)]
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
    keys = yaml_keys()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config is a YAML mapping of {', '.join(sorted(keys))}; {got(data)}")
    readers = {opt.key or f.name: opt.read for f, opt in options()}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in keys:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(keys), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise doc.where(key).error(ConfigError, f"unknown key{hint}; keys: {', '.join(sorted(keys))}")
        read = readers[key](value, doc.where(key))
        if read is not None or key in ("turn_timeout",):  # null turn_timeout: no limit
            kwargs[keys[key]] = read
    if "systems" in kwargs:
        check_labels(kwargs["systems"], kwargs.get("modes", []), doc.where("systems"))
    return kwargs


def merge_flags(kwargs: dict[str, Any], given: dict[str, Any], score_only: bool = False) -> dict[str, Any]:
    """`kwargs` (from a run YAML) with the flags the user gave read over them."""
    from .judge.settings import judge_from_flags

    out = dict(kwargs)
    for f, opt in options(score_only):
        if opt.flag is None or f.name not in given:
            continue
        out[f.name] = opt.read(given[f.name], Flag(opt.flag.split("/")[0]))
    judge = judge_from_flags(out.get("judge"), given)
    if judge is not None:
        out["judge"] = judge
    return out
