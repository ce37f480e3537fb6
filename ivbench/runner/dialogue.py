"""One dialogue on a loaded system: the turn loop that a worker runs (docs/architecture.md,
"Workers").

A dialogue runs in a fresh session, turn by turn, under the clock of `clock.time_turn`. Every
call into the system but `load()` runs in a worker thread bounded by the turn timeout
(`workers.call`): a system that raises, hangs, yields forever or yields nonsense costs a
recorded failure or a warning, never the run.

This module writes nothing: each finished turn is handed to `emit` as a `TurnDone` (its record,
its reply audio and the user audio the system heard), and the driver, the single writer of the
run directory, writes the audio files, fills in their paths and appends the record. So the same
code runs in the driver's own process (`--in-process`), in a worker process and in a Ray actor.
"""
from __future__ import annotations

import random
import sys
import zlib
from typing import Any, Optional
from collections.abc import Callable

import numpy as np

from ..systems.base import System
from ..types import Dialogue, Mode, TurnInput, TurnRecord, TurnStatus
from ..workers.protocol import DialogueJob, TurnDone
from . import workers
from .clock import TurnTiming, time_turn
from .reply import read_reply
from .user_audio import UserAudioSource

Emit = Callable[[TurnDone], None]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def dialogue_seed(seed: int, dialogue_id: str) -> int:
    """Each dialogue gets its own seed, so a resumed dialogue sees what an uninterrupted one would,
    on whichever worker it runs."""
    return (seed * 1_000_003 + zlib.crc32(dialogue_id.encode("utf-8"))) % 2**31


def say(error: dict[str, str]) -> str:
    return f"{error['type']}: {error['message']}"


def base_record(job: DialogueJob, index: int, worker: Optional[str]) -> dict[str, Any]:
    turn = job.dialogue.turns[index]
    return dict(system=job.label, task=job.task, dialogue_id=job.dialogue.id, turn_index=index,
                n_turns=len(job.dialogue.turns), mode=job.mode.value, attempt=job.attempt,
                user_text=turn.text, user_audio=None, reference=turn.reference,
                category=job.dialogue.category, metadata=job.dialogue.metadata, worker=worker)


def _empty_outcome() -> dict[str, Any]:
    return dict(reply_text=None, reply_audio=None, reply_sample_rate=None, reply_duration_s=None,
                first_audio_ms=None, first_text_ms=None, end_ms=None, rtf=None, events=[], stages={})


def failed(base: dict[str, Any], error: dict[str, str], status: TurnStatus = TurnStatus.FAILED,
           **outcome: Any) -> TurnRecord:
    return TurnRecord(**{**base, **_empty_outcome(), **outcome}, status=status.value, error=error)


def failed_turns(job: DialogueJob, error: dict[str, str], worker: Optional[str], first: int = 0,
                 later: Optional[dict[str, str]] = None) -> list[TurnRecord]:
    """Records of turns `first`… of a dialogue that did not run: `error` for the first of them,
    `later` (default: the same) for the rest."""
    return [failed(base_record(job, index, worker), error if index == first or later is None else later)
            for index in range(first, len(job.dialogue.turns))]


def open_session(system: System, timeout_s: Optional[float]) -> Any:
    """A new session, or a `workers.Failure` saying why there is none."""
    session = workers.call(system.new_session, timeout_s, "new_session()")
    if not isinstance(session, workers.Failure) and not callable(getattr(session, "respond", None)):
        return workers.Failure({"type": "InvalidSession", "traceback": "",
                                "message": f"new_session() returned a {type(session).__name__}, which has no "
                                           "respond(); return an ivbench Session"})
    return session


def close_session(session: Any, timeout_s: Optional[float]) -> Optional[dict[str, str]]:
    close = getattr(session, "close", None)
    if close is None:
        return None
    closed = workers.call(close, timeout_s, "session.close()")
    return closed.error if isinstance(closed, workers.Failure) else None


def turn_input(mode: Mode, dialogue: Dialogue, index: int,
               user_audio: UserAudioSource) -> tuple[TurnInput, list[str]]:
    turn = dialogue.turns[index]
    audio, warning = None, None
    if mode.speech_in:
        audio, warning = user_audio.audio_for(turn, f"dialogue {dialogue.id!r} turn {index}")
    given = TurnInput(mode=mode, text=turn.text, audio=audio, dialogue_id=dialogue.id, turn_index=index)
    return given, [warning] if warning else []


def warm_up(system: System, mode: Mode, dialogue: Dialogue, turns: int, timeout_s: Optional[float],
            user_audio: UserAudioSource) -> Optional[str]:
    """Run `turns` turns that are not recorded (first-call costs stay out of figures).
    Returns what went wrong, if anything; every call is bounded by the turn timeout."""
    session = open_session(system, timeout_s)
    if isinstance(session, workers.Failure):
        return say(session.error)
    problem: Optional[str] = None
    for n in range(turns):
        index = n % len(dialogue.turns)
        try:
            given, _ = turn_input(mode, dialogue, index, user_audio)
        except Exception as exc:  # the user turn's audio: its own dialogue will record this
            problem = f"user turn {index}: {type(exc).__name__}: {exc}"
            break
        timing = time_turn(session, given, timeout_s)
        if timing.timed_out and timing.error is not None:  # its worker may still be in the session: no close()
            return say(timing.error)
        problem = say(timing.error) if timing.error else read_reply(timing, "warm-up reply").problem
        if problem is not None:
            break
    error = close_session(session, timeout_s)
    if problem is None and error is not None:
        problem = f"session.close(): {say(error)}"
    return problem


def run_dialogue(system: System, job: DialogueJob, user_audio: UserAudioSource, timeout_s: Optional[float],
                 worker: Optional[str], emit: Emit) -> None:
    """One dialogue in a fresh session. Its last record is emitted after `session.close()`
    returns, so a session that fails to close fails its dialogue (--retry-failed redoes it)."""
    session = open_session(system, timeout_s)
    if isinstance(session, workers.Failure):
        for record in failed_turns(job, session.error, worker):
            emit(TurnDone(record))
        return
    last, timed_out = _run_turns(session, job, user_audio, timeout_s, worker, emit)
    if not timed_out:  # after a timeout the session's worker may still be running: leave it be
        error = close_session(session, timeout_s)
        if error is not None:
            last.record = _close_failed(last.record, error)
    emit(last)


def _run_turns(session: Any, job: DialogueJob, user_audio: UserAudioSource, timeout_s: Optional[float],
               worker: Optional[str], emit: Emit) -> tuple[TurnDone, bool]:
    """Every turn is emitted but the last, which is returned; and whether a turn timed out."""
    blocked: Optional[dict[str, str]] = None
    done: list[TurnDone] = []
    for index in range(len(job.dialogue.turns)):
        if done:
            emit(done.pop())
        base = base_record(job, index, worker)
        try:
            given, base["warnings"] = turn_input(job.mode, job.dialogue, index, user_audio)
        except Exception as exc:  # the user turn's own audio failed (voice error, bad file)
            done.append(TurnDone(failed(base, workers.error_dict(exc))))
            continue
        if blocked is not None:
            done.append(TurnDone(failed(base, blocked), user_audio=given.audio))
            continue
        timing = time_turn(session, given, timeout_s)
        done.append(finish_turn(base, timing, job.mode, given))
        if timing.timed_out:
            # The session's worker may still be running: it cannot take another turn.
            blocked = {"type": "Skipped", "traceback": "",
                       "message": f"not run: turn {index} of this dialogue timed out"}
    return done.pop(), blocked is not None


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


def _ms(ns: Optional[int]) -> Optional[float]:
    return None if ns is None else ns / 1e6


def finish_turn(base: dict[str, Any], timing: TurnTiming, mode: Mode, given: TurnInput) -> TurnDone:
    """Turn the clock's events into a record; the reply audio travels beside it, to be written
    (before the record) by whoever holds the run directory."""
    where = f"reply of {base['system']!r} to dialogue {base['dialogue_id']!r} turn {base['turn_index']}"
    reply = read_reply(timing, where)
    outcome: dict[str, Any] = dict(reply_text=reply.text, events=reply.events, stages=reply.stages,
                                   stage_data=reply.stage_data, first_audio_ms=_ms(reply.first_audio_ns),
                                   first_text_ms=_ms(reply.first_text_ns), end_ms=_ms(timing.end_ns),
                                   warnings=list(base.pop("warnings", [])) + reply.warnings)
    audio = reply.audio if reply.problem is None else None
    if audio is not None:
        outcome.update(reply_sample_rate=audio.sample_rate, reply_duration_s=audio.duration_s)
        if timing.end_ns is not None and audio.duration_s > 0:
            outcome["rtf"] = (timing.end_ns / 1e9) / audio.duration_s
    done = TurnDone(_turn_record(base, timing, mode, reply.problem, audio is not None, outcome, where),
                    reply_audio=audio, user_audio=given.audio)
    return done


def _turn_record(base: dict[str, Any], timing: TurnTiming, mode: Mode, problem: Optional[str], has_audio: bool,
                 outcome: dict[str, Any], where: str) -> TurnRecord:
    if timing.error is not None:
        status = TurnStatus.TIMEOUT if timing.timed_out else TurnStatus.FAILED
        return failed(base, timing.error, status, **outcome)
    if problem is None and mode.speech_out and not has_audio:
        problem = f"{where}: no audio in mode {mode.value} (speech output expected)"
    if problem is None and not mode.speech_out and not outcome["reply_text"]:
        problem = f"{where}: no text in mode {mode.value} (text output expected)"
    if problem is not None:
        return failed(base, {"type": "InvalidReply", "message": problem, "traceback": ""}, **outcome)
    return TurnRecord(**base, **{**_empty_outcome(), **outcome}, status=TurnStatus.OK.value, error=None)
