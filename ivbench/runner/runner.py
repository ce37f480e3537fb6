"""`ivbench eval`'s generation phase: task → runner → system → store.

For each system (loaded once) and each of its modes, every dialogue of the task runs in a
fresh session, turn by turn, under the clock of `clock.time_turn`. Each finished turn is one
record appended to the run's records.jsonl. A failing turn is a record with its error and
the run goes on; a dialogue cut by an interruption is redone from its first turn.

Every call into a system but `load()` runs in a worker thread bounded by the turn timeout
(`workers.call`, `clock.time_turn`): a system that raises, hangs, yields forever or yields
nonsense in its warm-up, `new_session()`, a turn, `session.close()` or `system.close()` costs a
recorded failure or a warning, never the run (docs/architecture.md, "Runs survive their systems").
"""
from __future__ import annotations

import datetime as _dt
import random
import shutil
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import __version__, registry
from ..audio import AudioError, write_wav
from ..cache import SqliteCache, default_cache_dir
from ..config import ConfigError, EvalConfig, SystemConfig
from ..provenance import git_revision, hardware, package_versions, resolve_device
from ..store.run_store import RunStore, safe_name
from ..systems.base import System
from ..types import Audio, Dialogue, Mode, Task, TurnInput, TurnRecord, TurnStatus
from . import workers
from .clock import TurnTiming, time_turn
from .reply import Reply, read_reply
from .user_audio import UserAudioSource

ALL_MODES = "all"  # `--mode all`: every mode each system declares

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
        if ALL_MODES in config.modes:
            modes = list(supported)
        else:
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
        "config": config.to_manifest(),
        "identity": config.identity(),
        "task": {"name": task.name, "path": task.path, "source": task.source, "licence": task.licence,
                 "description": task.description, "judge_prompt": task.judge_prompt,
                 "options": task.options, "references": task.references, "n_dialogues": n_dialogues,
                 "dialogue_ids": None},
        "systems": {label: {**_describe(system), "untrained": system.untrained,
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
    systems = _build_systems(config)
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
    done = _finished(store, config.retry_failed, echo)

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
    except KeyboardInterrupt:
        workers.interrupted(echo)  # lets a system's native call return, so the process exits cleanly
        raise
    finally:
        bar.close()
        cache.close()
    return EvalResult(run_dir=out, records=store.records(), resumed=resumed)


def _build_systems(config: EvalConfig) -> dict[str, System]:
    """Build (cheap) every system first, so an unknown name or bad option stops us before any work."""
    systems: dict[str, System] = {}
    for sc in config.systems:
        system = registry.create("systems", sc.spec)
        if not isinstance(system, System):
            raise ConfigError(f"system {sc.spec.ref!r} made a {type(system).__name__}, "
                              "not an ivbench System (subclass ivbench.systems.System)")
        systems[sc.label] = system
    return systems


def _finished(store: RunStore, retry_failed: bool, echo: Callable[[str], None]) -> set[tuple[str, str]]:
    """(system, dialogue id) of the dialogues a resumed run keeps; half-done ones are set aside."""
    dropped = store.drop_incomplete()
    if dropped:
        echo(f"resuming {store.root}: {dropped} records of interrupted dialogues will be redone")
    done = store.completed_dialogues()
    if retry_failed:
        failed = {key for key, recs in done.items() if any(not r.ok for r in recs)}
        store.remove_dialogues(failed)
        return set(done) - failed
    return set(done)


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
        # In the main thread: libraries may set up signal handlers or thread-bound state while
        # loading. Ctrl-C still stops it, once the native call in progress returns.
        system.load(device)
    except (Exception, SystemExit) as exc:
        echo(f"system {label!r} failed to load: {type(exc).__name__}: {exc}")
        error = workers.error_dict(exc)
        for unit, dialogue in todo:
            _record_failed_dialogue(store, unit, task, dialogue, error)
            bar.update(1)
        return
    info = _describe(system)
    store.note_loaded(label, info)
    if config.warmup > 0:
        problem = _warm_up(system, todo[0][0].mode, todo[0][1], config, user_audio)
        if problem is not None:
            echo(f"warm-up of {label!r} failed ({problem}); its dialogues run anyway")
            store.note_loaded(label, {**info, "warmup_failed": problem})
    for unit, dialogue in todo:
        bar.set_postfix_str(f"{unit.label} {dialogue.id}", refresh=False)
        set_seed(dialogue_seed(config.seed, dialogue.id))
        _run_dialogue(system, unit, dialogue, store, user_audio, config, task)
        bar.update(1)
    # Not in a `finally`: after Ctrl-C or a bug the process ends, and closing could wait on a busy system.
    closed = workers.call(system.close, config.turn_timeout, "system.close()")
    if isinstance(closed, workers.Failure):  # best effort: the records are already safe
        echo(f"system {label!r} failed to close: {closed.error['type']}: {closed.error['message']}")
    else:
        _take_torch_threads()


def _take_torch_threads() -> None:
    """torch's thread count is per thread under OpenMP: a close() that gives back the count its
    load() set in this (main) thread runs in a worker, so it reaches new threads but not this one.
    Take it here too, so what runs next in this thread (another load(), scoring) gets it."""
    if "torch" not in sys.modules:
        return
    import torch

    left = workers.call(torch.get_num_threads, 10.0, "torch.get_num_threads()")
    if isinstance(left, int) and left != torch.get_num_threads():
        torch.set_num_threads(left)


def _describe(system: System) -> dict[str, Any]:
    try:
        return system.describe()
    except Exception as exc:  # a plugin's describe() is for the manifest; its bug must not stop the run
        return {"describe_failed": f"{type(exc).__name__}: {exc}"}


def _say(error: dict[str, str]) -> str:
    return f"{error['type']}: {error['message']}"


def _open_session(system: System, timeout_s: Optional[float]) -> Any:
    """A new session, or a `workers.Failure` saying why there is none."""
    session = workers.call(system.new_session, timeout_s, "new_session()")
    if not isinstance(session, workers.Failure) and not callable(getattr(session, "respond", None)):
        return workers.Failure({"type": "InvalidSession", "traceback": "",
                                "message": f"new_session() returned a {type(session).__name__}, which has no "
                                           "respond(); return an ivbench Session"})
    return session


def _close_session(session: Any, timeout_s: Optional[float]) -> Optional[dict[str, str]]:
    close = getattr(session, "close", None)
    if close is None:
        return None
    closed = workers.call(close, timeout_s, "session.close()")
    return closed.error if isinstance(closed, workers.Failure) else None


def _warm_up(system: System, mode: Mode, dialogue: Dialogue, config: EvalConfig,
             user_audio: UserAudioSource) -> Optional[str]:
    """Run `config.warmup` turns that are not recorded (first-call costs stay out of figures).
    Returns what went wrong, if anything; every call is bounded by the turn timeout."""
    session = _open_session(system, config.turn_timeout)
    if isinstance(session, workers.Failure):
        return _say(session.error)
    problem: Optional[str] = None
    for n in range(config.warmup):
        index = n % len(dialogue.turns)
        try:
            turn_input, _ = _turn_input(mode, dialogue, index, user_audio)
        except Exception as exc:  # the user turn's audio: its own dialogue will record this
            problem = f"user turn {index}: {type(exc).__name__}: {exc}"
            break
        timing = time_turn(session, turn_input, config.turn_timeout)
        if timing.timed_out and timing.error is not None:  # its worker may still be in the session: no close()
            return _say(timing.error)
        problem = _say(timing.error) if timing.error else read_reply(timing, "warm-up reply").problem
        if problem is not None:
            break
    error = _close_session(session, config.turn_timeout)
    if problem is None and error is not None:
        problem = f"session.close(): {_say(error)}"
    return problem


def _turn_input(mode: Mode, dialogue: Dialogue, index: int,
                user_audio: UserAudioSource) -> tuple[TurnInput, list[str]]:
    turn = dialogue.turns[index]
    audio, warning = None, None
    if mode.speech_in:
        audio, warning = user_audio.audio_for(turn, f"dialogue {dialogue.id!r} turn {index}")
    turn_input = TurnInput(mode=mode, text=turn.text, audio=audio, dialogue_id=dialogue.id, turn_index=index)
    return turn_input, [warning] if warning else []


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
    """One dialogue in a fresh session. Its last record is written after `session.close()`
    returns, so a session that fails to close fails its dialogue (--retry-failed redoes it)."""
    attempt = _attempt(store, unit, dialogue)
    session = _open_session(system, config.turn_timeout)
    if isinstance(session, workers.Failure):
        _record_failed_dialogue(store, unit, task, dialogue, session.error, attempt)
        return
    last, timed_out = _run_turns(session, unit, dialogue, store, user_audio, config, task, attempt)
    if not timed_out:  # after a timeout the session's worker may still be running: leave it be
        error = _close_session(session, config.turn_timeout)
        if error is not None:
            last = _close_failed(last, error)
    store.append(last)


def _run_turns(session: Any, unit: _Unit, dialogue: Dialogue, store: RunStore, user_audio: UserAudioSource,
               config: EvalConfig, task: Task, attempt: int) -> tuple[TurnRecord, bool]:
    """Every turn's record is appended but the last, which is returned; and whether a turn timed out."""
    blocked: Optional[dict[str, str]] = None
    records: list[TurnRecord] = []
    for index in range(len(dialogue.turns)):
        if records:
            store.append(records.pop())
        base = _base_record(unit, task, dialogue, index, attempt)
        try:
            turn_input, base["warnings"] = _turn_input(unit.mode, dialogue, index, user_audio)
        except Exception as exc:  # the user turn's own audio failed (voice error, bad file)
            records.append(_failed(base, workers.error_dict(exc)))
            continue
        base["user_audio"] = _write_user_audio(store, dialogue, index, turn_input.audio)
        if blocked is not None:
            records.append(_failed(base, blocked))
            continue
        timing = time_turn(session, turn_input, config.turn_timeout)
        records.append(_finish_record(base, timing, unit.mode, store))
        if timing.timed_out:
            # The session's worker may still be running: it cannot take another turn.
            blocked = {"type": "Skipped", "traceback": "",
                       "message": f"not run: turn {index} of this dialogue timed out"}
    return records.pop(), blocked is not None


def _close_failed(record: TurnRecord, error: dict[str, str]) -> TurnRecord:
    """The dialogue's last record once `session.close()` failed: failed with that reason, unless
    the turn had already failed for its own (then the close failure is a warning)."""
    message = f"session.close() failed after the dialogue's last turn: {error['message']}"
    if not record.ok:
        record.warnings.append(f"{error['type']}: {message}")
        return record
    record.status = TurnStatus.FAILED.value
    record.error = {**error, "message": message}
    return record


def _base_record(unit: _Unit, task: Task, dialogue: Dialogue, index: int, attempt: int) -> dict[str, Any]:
    turn = dialogue.turns[index]
    return dict(system=unit.label, task=task.name, dialogue_id=dialogue.id, turn_index=index,
                n_turns=len(dialogue.turns), mode=unit.mode.value, attempt=attempt,
                user_text=turn.text, user_audio=None, reference=turn.reference,
                category=dialogue.category, metadata=dialogue.metadata)


def _empty_outcome() -> dict[str, Any]:
    return dict(reply_text=None, reply_audio=None, reply_sample_rate=None, reply_duration_s=None,
                first_audio_ms=None, first_text_ms=None, end_ms=None, rtf=None, events=[], stages={})


def _failed(base: dict[str, Any], error: dict[str, str], status: TurnStatus = TurnStatus.FAILED,
            **outcome: Any) -> TurnRecord:
    return TurnRecord(**{**base, **_empty_outcome(), **outcome}, status=status.value, error=error)


def _record_failed_dialogue(store: RunStore, unit: _Unit, task: Task, dialogue: Dialogue,
                            error: dict[str, str], attempt: Optional[int] = None) -> None:
    attempt = attempt or _attempt(store, unit, dialogue)
    for index in range(len(dialogue.turns)):
        store.append(_failed(_base_record(unit, task, dialogue, index, attempt), error))


def _ms(ns: Optional[int]) -> Optional[float]:
    return None if ns is None else ns / 1e6


def _finish_record(base: dict[str, Any], timing: TurnTiming, mode: Mode, store: RunStore) -> TurnRecord:
    """Turn the clock's events into a record; the reply audio is written before the record."""
    where = f"reply of {base['system']!r} to dialogue {base['dialogue_id']!r} turn {base['turn_index']}"
    reply = read_reply(timing, where)
    outcome: dict[str, Any] = dict(reply_text=reply.text, events=reply.events, stages=reply.stages,
                                   stage_data=reply.stage_data, first_audio_ms=_ms(reply.first_audio_ns),
                                   first_text_ms=_ms(reply.first_text_ns), end_ms=_ms(timing.end_ns),
                                   warnings=list(base.pop("warnings", [])) + reply.warnings)
    if reply.problem is None and reply.audio is not None:
        outcome.update(_write_reply_audio(store, base, reply, timing))
    if timing.error is not None:
        status = TurnStatus.TIMEOUT if timing.timed_out else TurnStatus.FAILED
        return _failed(base, timing.error, status, **outcome)
    problem = reply.problem
    if problem is None and mode.speech_out and reply.audio is None:
        problem = f"{where}: no audio in mode {mode.value} (speech output expected)"
    if problem is None and not mode.speech_out and not reply.text:
        problem = f"{where}: no text in mode {mode.value} (text output expected)"
    if problem is not None:
        return _failed(base, {"type": "InvalidReply", "message": problem, "traceback": ""}, **outcome)
    return TurnRecord(**base, **{**_empty_outcome(), **outcome}, status=TurnStatus.OK.value, error=None)


def _write_reply_audio(store: RunStore, base: dict[str, Any], reply: Reply, timing: TurnTiming) -> dict[str, Any]:
    assert reply.audio is not None
    path = store.audio_path(base["system"], base["dialogue_id"], base["turn_index"])
    write_wav(path, reply.audio)
    fields: dict[str, Any] = dict(reply_audio=store.relative(path), reply_sample_rate=reply.audio.sample_rate,
                                  reply_duration_s=reply.audio.duration_s)
    if timing.end_ns is not None and reply.audio.duration_s > 0:
        fields["rtf"] = (timing.end_ns / 1e9) / reply.audio.duration_s
    return fields
