"""`ivbench eval`'s generation phase: task → runner → workers → system, and the driver → store.

For each system and each of its modes, every dialogue of the task runs in a fresh session,
turn by turn, under the clock of `clock.time_turn` (`dialogue.run_dialogue`). That runs on a
worker (docs/architecture.md, "Workers"): by default one worker process on this machine, so a
system that exits, crashes or damages its process fails its dialogue and the run goes on;
`--workers N` / `--ray-address` spread the dialogues over Ray actors; `--in-process` runs them
in this process. Whatever runs them, this process (the driver) is the only writer of the run
directory: each finished turn comes back as a record and its audio, and is written and appended
here, so resuming, `--retry-failed` and records.partial.jsonl mean the same with any workers.
"""
from __future__ import annotations

import datetime as _dt
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from collections.abc import Callable

from .. import __version__, registry
from ..audio import AudioError, write_wav
from ..cache import SqliteCache, default_cache_dir
from ..config import ConfigError, EvalConfig, SystemConfig
from ..errors import PluginError
from ..provenance import git_revision, hardware, package_versions, resolve_device
from ..store.run_store import RunStore, safe_name
from ..store.scores import discard_scores
from ..systems.base import System
from ..types import Dialogue, Mode, Task, TurnRecord
from ..workers import contention
from ..workers.host import IN_PROCESS, WorkerHost, build_system, describe, take_torch_threads
from ..workers.pool import Ids, Pool, run_inline
from ..workers.protocol import DialogueJob, JobDone, Loaded, Probe, Start, TurnDone
from . import workers
from .dialogue import dialogue_seed, failed_turns, say, set_seed
from .user_audio import UserAudioSource

__all__ = ["EvalResult", "default_out_dir", "dialogue_seed", "run_eval", "set_seed"]

ALL_MODES = "all"  # `--mode all`: every mode each system declares
_take_torch_threads = take_torch_threads  # where tests and older code look for it


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


@dataclass
class _SystemInfo:
    """What a system is before it loads: built here, or (for its own `python:`) in its interpreter."""

    modes: tuple[Mode, ...]
    untrained: bool
    info: dict[str, Any]
    system: Optional[System] = None  # the object built here (run by --in-process)

    def supported_modes(self) -> tuple[Mode, ...]:
        return self.modes


def default_out_dir(config: EvalConfig) -> Path:
    """Deterministic, so running the same command again resumes the same run."""
    systems = "+".join(safe_name(s.label) for s in config.systems)
    return Path("runs") / safe_name(f"{config.task.label}__{systems}")[:150]


def _plan_units(config: EvalConfig, systems: dict[str, _SystemInfo]) -> list[_Unit]:
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
                   systems: dict[str, _SystemInfo], argv: Optional[list[str]]) -> dict[str, Any]:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    where = {sc.label: {k: v for k, v in (("python", sc.python), ("resources", sc.resources)) if v is not None}
             for sc in config.systems}
    return {
        "ivbench_version": __version__,
        "created": now,
        "config": config.to_manifest(),
        "identity": config.identity(),
        "task": {"name": task.name, "path": task.path, "source": task.source, "licence": task.licence,
                 "description": task.description, "judge_prompt": task.judge_prompt,
                 "options": task.options, "references": task.references, "n_dialogues": n_dialogues,
                 "dialogue_ids": None},
        "systems": {label: {**system.info, "untrained": system.untrained,
                            "modes": [m.value for m in system.supported_modes()], **where.get(label, {})}
                    for label, system in systems.items()},
        "seed": config.seed,
        "git": git_revision(),
        "packages": package_versions(),
        "hardware": hardware(device),
        "sessions": [{"started": now, "argv": argv or sys.argv, "device": device, "workers": {}}],
    }


def run_eval(config: EvalConfig, progress: bool = True, argv: Optional[list[str]] = None,
             echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> EvalResult:
    """Generate every missing record of the run that `config` describes."""
    if config.uses_ray:
        from ..workers.ray_backend import require_ray

        require_ray("--workers" if config.workers is not None else "--ray-address")
    task = registry.create("tasks", config.task)
    dialogues = task.dialogues[: config.limit] if config.limit is not None else list(task.dialogues)
    if not dialogues:
        raise ConfigError(f"task {task.name!r} has no dialogues to run (check --limit and its options)")
    registry.lookup("voices", config.voice.ref)  # an unknown voice fails before any work
    systems = _build_systems(config)
    units = _plan_units(config, systems)
    # Ray workers resolve "auto" where they run: the driver of a GPU cluster may have no GPU.
    device = config.device if config.uses_ray else resolve_device(config.device)
    _check_recorded_audio(dialogues)  # before the run directory is touched (--fresh deletes it)

    out = Path(config.out) if config.out else default_out_dir(config)
    store = RunStore(out)
    # One writer at a time: a second command on this --out is refused (ivbench/store/lock.py).
    with store.claim(config.fresh):
        manifest = build_manifest(config, task, len(dialogues), device, systems, argv)
        manifest["task"]["dialogue_ids"] = [d.id for d in dialogues]
        manifest["task"]["dialogue_digests"] = {d.id: d.digest() for d in dialogues}
        resumed = store.open(manifest)
        _generate(config, store, task, dialogues, units, systems, device, progress, echo)
        return EvalResult(run_dir=out, records=store.records(), resumed=resumed)


def _generate(config: EvalConfig, store: RunStore, task: Task, dialogues: list[Dialogue], units: list[_Unit],
              systems: dict[str, _SystemInfo], device: str, progress: bool, echo: Callable[[str], None]) -> None:
    """Every record the run directory is missing (the dialogues of `units` not finished before)."""
    done = _finished(store, config.retry_failed, echo)
    cache = SqliteCache((config.cache_dir or default_cache_dir()) / "tts.sqlite", enabled=config.use_cache)
    user_audio = UserAudioSource(config.voice, cache, device="cpu")

    todo = [(u, d) for u in units for d in dialogues if (u.label, d.id) not in done]
    if todo:
        _discard_stale_scores(store.root, echo)
    bar = _progress(total=len(units) * len(dialogues), initial=len(units) * len(dialogues) - len(todo),
                    enabled=progress)
    ids = Ids(first=_next_worker_number(store))
    try:
        with _cluster(config, echo) as cluster:
            for sc in config.systems:
                unit_todo = [(u, d) for u, d in todo if u.system is sc]
                if not unit_todo:
                    continue
                jobs = [DialogueJob(u.label, u.mode, d, task.name, _attempt(store, u.label, d)) for u, d in unit_todo]
                sink = _Writer(store, cache, user_audio, bar, echo, sc.label)
                _run_system(sc, systems[sc.label], jobs, sink, config, device, cluster, ids, echo)
    except KeyboardInterrupt:
        workers.interrupted(echo)  # lets a system's native call return, so the process exits cleanly
        raise
    finally:
        bar.close()
        cache.close()


def _next_worker_number(store: RunStore) -> int:
    """The first worker number no earlier session of the run used (their records keep theirs)."""
    used = [int(match.group(1)) for session in store.read_manifest().get("sessions") or [] if isinstance(session, dict)
            for name in session.get("workers") or {} if (match := re.fullmatch(r"w(\d+)", str(name)))]
    return max(used, default=0) + 1


def _discard_stale_scores(out: Path, echo: Callable[[str], None]) -> None:
    """This session adds records: the scores of the earlier ones would be shown as the run's."""
    stale = discard_scores(out)
    if stale:
        echo(f"{out}: removed the scores of its earlier records ({', '.join(stale)}): this session adds "
             f"records; scoring the run (`ivbench score {out}`) writes them again, from the cache")


@contextmanager
def _cluster(config: EvalConfig, echo: Callable[[str], None]) -> Iterator[Any]:
    """The Ray cluster for the run (started here, or joined), or None without Ray."""
    if not config.uses_ray:
        yield None
        return
    from ..workers.ray_backend import Cluster

    with Cluster(config.workers, config.ray_address, echo) as cluster:
        yield cluster


def _build_systems(config: EvalConfig) -> dict[str, _SystemInfo]:
    """Build (cheap) every system first, so an unknown name or bad option stops us before any work.
    A system with its own `python:` is built in that interpreter, where its packages are."""
    systems: dict[str, _SystemInfo] = {}
    for sc in config.systems:
        if sc.python is None:
            system = build_system(sc.spec)
            systems[sc.label] = _SystemInfo(system.supported_modes(), bool(system.untrained), describe(system),
                                            system)
        else:
            systems[sc.label] = _probe(sc)
    return systems


def _probe(sc: SystemConfig) -> _SystemInfo:
    from ..workers.process import ProcessWorker

    if not Path(sc.python or "").exists():
        raise ConfigError(f"system {sc.label!r}: python {sc.python!r}: no such interpreter; give the path of a "
                          "Python where ivbench and the system's packages are installed")
    probed = ProcessWorker("probe", python=sc.python).probe(Probe(sc))
    if probed.error_type is not None:
        from .. import errors

        cls = getattr(errors, probed.error_type, PluginError)
        raise cls(f"system {sc.label!r} (python {sc.python}): {probed.message}")
    return _SystemInfo(tuple(Mode.parse(m) for m in probed.modes), probed.untrained, probed.info)


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


def _attempt(store: RunStore, label: str, dialogue: Dialogue) -> int:
    from ..store.run_store import PARTIAL, read_jsonl_records

    previous = [r.attempt for r in read_jsonl_records(store.root / PARTIAL)
                if r.system == label and r.dialogue_id == dialogue.id]
    return max(previous, default=0) + 1


def _run_system(sc: SystemConfig, info: _SystemInfo, jobs: list[DialogueJob], sink: _Writer,
                config: EvalConfig, device: str, cluster: Any, ids: Ids, echo: Callable[[str], None]) -> None:
    """Every job of one system, on its workers; each worker loads the system once."""
    # A worker on ivbench's own interpreter imports what the driver can (a test's or a script's module).
    sys_path = [p for p in sys.path if p] if sc.python is None else []

    def start(worker_id: str) -> Start:
        return Start(sc, device, config.seed, config.turn_timeout, config.warmup, config.voice, worker_id, sys_path)

    if config.in_process:
        run_inline(WorkerHost(start(IN_PROCESS), system=info.system), jobs, sink)
        return
    if cluster is not None:
        slots, make = cluster.workers_for(sc, device, len(jobs))
    else:
        from ..workers.process import ProcessWorker

        slots = 1

        def make(slot: int, worker_id: str) -> Any:
            return ProcessWorker(worker_id, python=sc.python)

    pool = Pool(make, slots, start, config.turn_timeout, echo, ids, prepare=sink.prepare)
    pool.run(jobs, sink)
    sink.note_contention(slots)


class _Writer:
    """The driver's side of a system's jobs: everything workers send is written here, in the
    main thread, exactly as a run in one process writes it (audio before its record; records
    appended, flushed and fsynced one by one)."""

    def __init__(self, store: RunStore, cache: SqliteCache, user_audio: UserAudioSource, bar: Any,
                 echo: Callable[[str], None], label: str) -> None:
        self.store, self.cache, self.user_audio = store, cache, user_audio
        self.bar, self.echo, self.label = bar, echo, label
        self.info: Optional[dict[str, Any]] = None  # what the first loaded worker's system said of itself
        self.load_failed = False
        self.fingerprints: dict[str, dict[str, Any]] = {}

    def prepare(self, job: DialogueJob) -> DialogueJob:
        """Just before a job leaves for its worker (in that worker's thread: reads only): the user
        turns' audio this machine has, so the worker needs neither this cache nor the task's folder."""
        if job.mode.speech_in:
            job.tts, job.recorded = self.user_audio.known(job.dialogue.turns)
        return job

    def loaded(self, loaded: Loaded) -> None:
        self.fingerprints[loaded.worker] = {**loaded.fingerprint, "system": self.label,
                                            "load_s": round(loaded.seconds, 3)}
        self.store.note_session("workers", self.fingerprints, merge=True)
        if loaded.error is not None:
            if not self.load_failed:
                self.echo(f"system {self.label!r} failed to load: {say(loaded.error)}")
            self.load_failed = True
        elif self.info is None:
            self.info = loaded.info
            self.store.note_loaded(self.label, loaded.info)

    def turn(self, job: DialogueJob, done: TurnDone) -> None:
        record = done.record
        if done.user_audio is not None:
            path = self.store.audio_path("user", job.dialogue.id, record.turn_index)
            if not path.exists():
                write_wav(path, done.user_audio)
            record.user_audio = self.store.relative(path)
        if done.reply_audio is not None:
            path = self.store.audio_path(record.system, record.dialogue_id, record.turn_index)
            write_wav(path, done.reply_audio)
            record.reply_audio = self.store.relative(path)
        self.store.append(record)

    def finished(self, job: DialogueJob, done: JobDone) -> None:
        for key, value in done.tts.items():
            self.cache.put(key, value)
        if done.warmed and done.warmup_problem is not None:
            self.echo(f"warm-up of {self.label!r} failed ({done.warmup_problem}); its dialogues run anyway")
            self.store.note_loaded(self.label, {**(self.info or {}), "warmup_failed": done.warmup_problem})
        self._advance(job)

    def crashed(self, job: DialogueJob, worker: str, turns_received: int, error: dict[str, str]) -> None:
        """The worker died in turn `turns_received`: that turn failed with why, the rest were not run."""
        self.echo(f"dialogue {job.dialogue.id!r} of {self.label!r}: {error['message']}")
        skipped = {"type": "Skipped", "traceback": "",
                   "message": f"not run: the worker died in turn {turns_received} of this dialogue"}
        for record in failed_turns(job, error, worker, first=turns_received, later=skipped):
            self.store.append(record)
        self._advance(job)

    def not_run(self, job: DialogueJob, error: dict[str, str]) -> None:
        for record in failed_turns(job, error, None):
            self.store.append(record)
        self._advance(job)

    def lost(self, job: DialogueJob) -> DialogueJob:
        """Its worker's host went away: set its turns aside and send it again, from its first turn."""
        self.store.remove_dialogues({job.key})
        job.attempt = _attempt(self.store, job.label, job.dialogue)
        return job

    def closed(self, worker: str, error: Optional[dict[str, str]]) -> None:
        if error is not None:
            self.echo(f"system {self.label!r} failed to close: {say(error)}")

    def note_contention(self, slots: int) -> None:
        notes = contention.notes(self.fingerprints, slots)
        if notes:
            self.store.note_session("contention", {self.label: notes}, merge=True)
            for note in notes:
                self.echo(f"note: latency of {self.label!r} was measured under contention: {note}")

    def _advance(self, job: DialogueJob) -> None:
        self.bar.set_postfix_str(f"{job.label} {job.dialogue.id}", refresh=False)
        self.bar.update(1)
