"""`ivbench eval`'s generation phase: task → runner → system → store.

For each system (loaded once) and each of its modes, every dialogue of the task runs in a
fresh session, turn by turn, under the clock of `clock.time_turn`. Each finished turn is one
record appended to the run's records.jsonl. A failing turn is a record with its error and
the run goes on; a dialogue cut by an interruption is redone from its first turn.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import random
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .. import __version__, registry
from ..audio import AudioError, check_audio, concat, write_wav
from ..cache import SqliteCache, default_cache_dir
from ..config import ConfigError, EvalConfig, SystemConfig
from ..provenance import git_revision, hardware, package_versions, resolve_device
from ..store.run_store import RunStore, safe_name
from ..systems.base import System
from ..types import (Audio, AudioChunk, Dialogue, Mode, StageMark, Task, TextDelta, TurnInput,
                     TurnRecord, TurnStatus)
from .clock import TurnTiming, time_turn
from .user_audio import UserAudioSource

log = logging.getLogger("ivbench")


@dataclass
class EvalResult:
    run_dir: Path
    records: list[TurnRecord]
    resumed: bool


@dataclass
class _Unit:
    """One system in one mode: the thing a record's `system` field names."""

    system: SystemConfig
    mode: Mode
    label: str


def default_out_dir(config: EvalConfig) -> Path:
    """Deterministic, so running the same command again resumes the same run."""
    systems = "+".join(safe_name(s.label) for s in config.systems)
    return Path("runs") / safe_name(f"{config.task.label}__{systems}")[:150]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def dialogue_seed(seed: int, dialogue_id: str) -> int:
    """Each dialogue gets its own seed, so a resumed dialogue sees what an uninterrupted one would."""
    return (seed * 1_000_003 + zlib.crc32(dialogue_id.encode("utf-8"))) % 2**31


def _plan_units(config: EvalConfig, systems: dict[str, System]) -> list[_Unit]:
    labels = [s.label for s in config.systems]
    duplicated = {label for label in labels if labels.count(label) > 1}
    if duplicated:
        raise ConfigError(f"two systems share the label {sorted(duplicated)[0]!r}; give each a distinct 'label'")
    units: list[_Unit] = []
    for sc in config.systems:
        supported = systems[sc.label].supported_modes()
        modes = [Mode.parse(m) for m in config.modes] or [supported[0]]
        for mode in modes:
            if mode not in supported:
                raise ConfigError(f"system {sc.label!r} does not support mode {mode.value}; "
                                  f"it supports {', '.join(m.value for m in supported)}")
            label = sc.label if len(modes) == 1 else f"{sc.label}@{mode.value}"
            units.append(_Unit(sc, mode, label))
    return units


def build_manifest(config: EvalConfig, task: Task, n_dialogues: int, device: str,
                   systems: dict[str, System], argv: Optional[list[str]]) -> dict[str, Any]:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "ivbench_version": __version__,
        "created": now,
        "config": {**config.identity(), "limit": config.limit, "warmup": config.warmup,
                   "turn_timeout": config.turn_timeout, "device": config.device},
        "task": {"name": task.name, "path": task.path, "source": task.source, "licence": task.licence,
                 "description": task.description, "judge_prompt": task.judge_prompt,
                 "options": task.options, "references": task.references, "n_dialogues": n_dialogues,
                 "dialogue_ids": None},
        "systems": {label: {**system.describe(), "untrained": system.untrained,
                            "modes": [m.value for m in system.supported_modes()]}
                    for label, system in systems.items()},
        "seed": config.seed,
        "git": git_revision(),
        "packages": package_versions(),
        "hardware": hardware(device),
        "sessions": [{"started": now, "argv": argv or sys.argv, "device": device}],
    }


def run_eval(config: EvalConfig, progress: bool = True, argv: Optional[list[str]] = None,
             echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> EvalResult:
    """Generate every missing record of the run that `config` describes."""
    task = registry.create("tasks", config.task)
    dialogues = task.dialogues[: config.limit] if config.limit is not None else list(task.dialogues)
    if not dialogues:
        raise ConfigError(f"task {task.name!r} has no dialogues to run (check --limit and its options)")
    registry.lookup("voices", config.voice.ref)  # an unknown voice fails before any work
    # Build (cheap) every system first, so an unknown name or bad option stops us before any work.
    systems: dict[str, System] = {}
    for sc in config.systems:
        system = registry.create("systems", sc.spec)
        if not isinstance(system, System):
            raise ConfigError(f"system {sc.spec.ref!r} made a {type(system).__name__}, "
                              "not an ivbench System (subclass ivbench.systems.System)")
        systems[sc.label] = system
    units = _plan_units(config, systems)
    device = resolve_device(config.device)
    _check_recorded_audio(dialogues)  # before the run directory is touched (--fresh deletes it)

    out = Path(config.out) if config.out else default_out_dir(config)
    store = RunStore(out)
    if config.fresh and out.exists():
        shutil.rmtree(out)
    manifest = build_manifest(config, task, len(dialogues), device, systems, argv)
    manifest["task"]["dialogue_ids"] = [d.id for d in dialogues]
    resumed = store.open(manifest)
    dropped = store.drop_incomplete()
    if dropped:
        echo(f"resuming {out}: {dropped} records of interrupted dialogues will be redone")
    done = store.completed_dialogues()
    if config.retry_failed:
        failed = {key for key, recs in done.items() if any(not r.ok for r in recs)}
        store.remove_dialogues(failed)
        done = {k: v for k, v in done.items() if k not in failed}

    cache = SqliteCache((config.cache_dir or default_cache_dir()) / "tts.sqlite", enabled=config.use_cache)
    user_audio = UserAudioSource(config.voice, cache, device="cpu")

    todo = [(u, d) for u in units for d in dialogues if (u.label, d.id) not in done]
    bar = _progress(total=len(units) * len(dialogues), initial=len(units) * len(dialogues) - len(todo),
                    enabled=progress)
    try:
        for sc in config.systems:
            unit_todo = [(u, d) for u, d in todo if u.system is sc]
            if not unit_todo:
                continue
            _run_system(systems[sc.label], unit_todo, store, user_audio, config, task, device, bar, echo)
    finally:
        bar.close()
        cache.close()
    return EvalResult(run_dir=out, records=store.records(), resumed=resumed)


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="dialogue", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


def _check_recorded_audio(dialogues: list[Dialogue]) -> None:
    """Read every recorded user turn now: a bad file stops the run before any system work."""
    from ..audio import read_audio

    for d in dialogues:
        for i, turn in enumerate(d.turns):
            if turn.audio_path is not None:
                try:
                    read_audio(turn.audio_path)
                except AudioError as exc:
                    raise AudioError(f"dialogue {d.id!r} turn {i}: {exc}") from None


def _run_system(system: System, todo: list[tuple[_Unit, Dialogue]], store: RunStore,
                user_audio: UserAudioSource, config: EvalConfig, task: Task, device: str,
                bar: Any, echo: Callable[[str], None]) -> None:
    label = todo[0][0].system.label
    set_seed(config.seed)
    try:
        system.load(device)
    except Exception as exc:
        echo(f"system {label!r} failed to load: {type(exc).__name__}: {exc}")
        error = _error_dict(exc)
        for unit, dialogue in todo:
            _record_failed_dialogue(store, unit, task, dialogue, error, user_audio)
            bar.update(1)
        return
    store.note_loaded(label, system.describe())
    try:
        if config.warmup > 0:
            _warm_up(system, todo[0][0].mode, todo[0][1], config, user_audio, echo, label)
        for unit, dialogue in todo:
            bar.set_postfix_str(f"{unit.label} {dialogue.id}", refresh=False)
            set_seed(dialogue_seed(config.seed, dialogue.id))
            _run_dialogue(system, unit, dialogue, store, user_audio, config, task)
            bar.update(1)
    finally:
        try:
            system.close()
        except Exception as exc:  # closing is best effort; the records are already safe
            echo(f"system {label!r} failed to close: {exc}")


def _warm_up(system: System, mode: Mode, dialogue: Dialogue, config: EvalConfig,
             user_audio: UserAudioSource, echo: Callable[[str], None], label: str) -> None:
    """Run `config.warmup` turns that are not recorded (first-call costs stay out of figures)."""
    session = system.new_session()
    try:
        for n in range(config.warmup):
            index = n % len(dialogue.turns)
            turn_input = _turn_input(mode, dialogue, index, user_audio)
            timing = time_turn(session, turn_input, config.turn_timeout)
            if timing.error:
                echo(f"warm-up turn of {label!r} failed: {timing.error['message']}")
                if timing.timed_out:
                    return
    finally:
        session.close()


def _turn_input(mode: Mode, dialogue: Dialogue, index: int, user_audio: UserAudioSource) -> TurnInput:
    turn = dialogue.turns[index]
    audio = user_audio.audio_for(turn, f"dialogue {dialogue.id!r} turn {index}") if mode.speech_in else None
    return TurnInput(mode=mode, text=turn.text, audio=audio, dialogue_id=dialogue.id, turn_index=index)


def _write_user_audio(store: RunStore, dialogue: Dialogue, index: int, audio: Optional[Audio]) -> Optional[str]:
    if audio is None:
        return None
    path = store.audio_path("user", dialogue.id, index)
    if not path.exists():
        write_wav(path, audio)
    return store.relative(path)


def _attempt(store: RunStore, unit: _Unit, dialogue: Dialogue) -> int:
    from ..store.run_store import PARTIAL, read_jsonl_records

    previous = [r.attempt for r in read_jsonl_records(store.root / PARTIAL)
                if r.system == unit.label and r.dialogue_id == dialogue.id]
    return max(previous, default=0) + 1


def _run_dialogue(system: System, unit: _Unit, dialogue: Dialogue, store: RunStore,
                  user_audio: UserAudioSource, config: EvalConfig, task: Task) -> None:
    attempt = _attempt(store, unit, dialogue)
    try:
        session = system.new_session()
    except Exception as exc:
        _record_failed_dialogue(store, unit, task, dialogue, _error_dict(exc), user_audio, attempt)
        return
    blocked: Optional[dict[str, str]] = None
    for index, turn in enumerate(dialogue.turns):
        base = _base_record(unit, task, dialogue, index, attempt)
        try:
            turn_input = _turn_input(unit.mode, dialogue, index, user_audio)
        except Exception as exc:  # the user turn's own audio failed (voice error, bad file)
            store.append(_failed(base, _error_dict(exc)))
            continue
        base["user_audio"] = _write_user_audio(store, dialogue, index, turn_input.audio)
        if blocked is not None:
            store.append(_failed(base, blocked))
            continue
        timing = time_turn(session, turn_input, config.turn_timeout)
        store.append(_finish_record(base, timing, unit.mode, store))
        if timing.timed_out:
            # The session's worker may still be running: it cannot take another turn.
            blocked = {"type": "Skipped", "traceback": "",
                       "message": f"not run: turn {index} of this dialogue timed out"}
    if blocked is None:
        try:
            session.close()
        except Exception:
            log.warning("session of %s failed to close", unit.label, exc_info=True)


def _base_record(unit: _Unit, task: Task, dialogue: Dialogue, index: int, attempt: int) -> dict[str, Any]:
    turn = dialogue.turns[index]
    return dict(system=unit.label, task=task.name, dialogue_id=dialogue.id, turn_index=index,
                n_turns=len(dialogue.turns), mode=unit.mode.value, attempt=attempt,
                user_text=turn.text, user_audio=None, reference=turn.reference,
                category=dialogue.category)


def _empty_outcome() -> dict[str, Any]:
    return dict(reply_text=None, reply_audio=None, reply_sample_rate=None, reply_duration_s=None,
                first_audio_ms=None, first_text_ms=None, end_ms=None, rtf=None, events=[], stages={})


def _failed(base: dict[str, Any], error: dict[str, str], status: TurnStatus = TurnStatus.FAILED,
            **outcome: Any) -> TurnRecord:
    return TurnRecord(**{**base, **_empty_outcome(), **outcome}, status=status.value, error=error)


def _record_failed_dialogue(store: RunStore, unit: _Unit, task: Task, dialogue: Dialogue,
                            error: dict[str, str], user_audio: UserAudioSource,
                            attempt: Optional[int] = None) -> None:
    attempt = attempt or _attempt(store, unit, dialogue)
    for index in range(len(dialogue.turns)):
        store.append(_failed(_base_record(unit, task, dialogue, index, attempt), error))


def _error_dict(exc: BaseException) -> dict[str, str]:
    import traceback

    return {"type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def _ms(ns: Optional[int]) -> Optional[float]:
    return None if ns is None else ns / 1e6


def _finish_record(base: dict[str, Any], timing: TurnTiming, mode: Mode, store: RunStore) -> TurnRecord:
    """Turn the clock's events into a record; the reply audio is written before the record."""
    events: list[list[Any]] = []
    texts: list[str] = []
    chunks: list[Audio] = []
    stages: dict[str, float] = {}
    stage_data: dict[str, Any] = {}
    first_audio = first_text = None
    problem: Optional[str] = None
    where = f"reply of {base['system']!r} to dialogue {base['dialogue_id']!r} turn {base['turn_index']}"
    for stamp, event in timing.events:
        if isinstance(event, AudioChunk):
            if not isinstance(event.samples, np.ndarray):
                problem = (f"{where}: AudioChunk.samples is a {type(event.samples).__name__}; "
                           "yield numpy arrays on the CPU (e.g. tensor.float().cpu().numpy())")
                break
            size = int(np.asarray(event.samples).size)
            events.append(["audio", stamp / 1e6, size])
            if size == 0:
                continue
            try:
                chunks.append(check_audio(event.samples, event.sample_rate, where))
            except AudioError as exc:
                problem = str(exc)
                break
            first_audio = stamp if first_audio is None else first_audio
        elif isinstance(event, TextDelta):
            events.append(["text", stamp / 1e6, len(event.text)])
            texts.append(event.text)
            if event.text and first_text is None:
                first_text = stamp
        elif isinstance(event, StageMark):
            events.append(["stage", stamp / 1e6, event.name])
            stages.setdefault(event.name, stamp / 1e6)
            if event.data is not None and event.name not in stage_data:
                try:
                    if not isinstance(event.data, dict):
                        raise TypeError(f"a {type(event.data).__name__}")
                    json.dumps(event.data, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    problem = (f"{where}: StageMark({event.name!r}).data is not a dict of JSON values ({exc}); "
                               "give str, numbers, bools, None, lists and dicts of them")
                    break
                stage_data[event.name] = event.data
        else:
            problem = (f"{where}: yielded a {type(event).__name__}; yield AudioChunk, TextDelta "
                       "or StageMark from ivbench.types")
            break
    reply_text = "".join(texts).strip() if texts else None
    outcome: dict[str, Any] = dict(reply_text=reply_text, events=events, stages=stages, stage_data=stage_data,
                                   first_audio_ms=_ms(first_audio), first_text_ms=_ms(first_text),
                                   end_ms=_ms(timing.end_ns))
    reply: Optional[Audio] = None
    if problem is None and chunks:
        try:
            reply = concat(chunks, where)
        except AudioError as exc:
            problem = str(exc)
    if reply is not None:
        path = store.audio_path(base["system"], base["dialogue_id"], base["turn_index"])
        write_wav(path, reply)
        outcome.update(reply_audio=store.relative(path), reply_sample_rate=reply.sample_rate,
                       reply_duration_s=reply.duration_s)
        if timing.end_ns is not None and reply.duration_s > 0:
            outcome["rtf"] = (timing.end_ns / 1e9) / reply.duration_s
    if timing.error is not None:
        status = TurnStatus.TIMEOUT if timing.timed_out else TurnStatus.FAILED
        return _failed(base, timing.error, status, **outcome)
    if problem is None and mode.speech_out and reply is None:
        problem = f"{where}: no audio in mode {mode.value} (speech output expected)"
    if problem is None and not mode.speech_out and not reply_text:
        problem = f"{where}: no text in mode {mode.value} (text output expected)"
    if problem is not None:
        return _failed(base, {"type": "InvalidReply", "message": problem, "traceback": ""}, **outcome)
    return TurnRecord(**base, **{**_empty_outcome(), **outcome}, status=TurnStatus.OK.value, error=None)
