"""A run directory: manifest.json, records.jsonl (append-only), audio/.

Records are appended one line per finished turn, flushed and fsynced, so a `kill -9` loses
at most the turn in flight. Reading back tolerates a torn last line. A dialogue whose
records are incomplete (the run was cut mid-dialogue) is redone from its first turn on
resume; its partial records are moved to records.partial.jsonl so none appears twice.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional
from collections.abc import Iterable, Iterator

from ..errors import ConfigError, RunDirError, TaskFileError
from ..types import TurnRecord
from . import formats
from .lock import LOCK, writing

MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
PARTIAL = "records.partial.jsonl"



class ConfigMismatch(RunDirError):
    """Resuming a run directory with a configuration that measures something else."""


def safe_name(text: str) -> str:
    """A file-system-safe rendering of a label or id: letters, digits and ._=- kept, every other
    run of characters one '_', no leading or trailing '.' or '_' (so never '.' or '..'), at most
    120 characters. Different texts can share a rendering: see `name_key`."""
    cleaned = re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("._")
    return cleaned[:120] or "_"


def name_key(text: str) -> str:
    """Texts with the same key get the same file name on some file system (`safe_name` equal up
    to case, for case-insensitive ones). Task files refuse dialogue ids, and run configs system
    labels, that share a key, since their audio would overwrite each other's."""
    return safe_name(text).lower()


def read_jsonl_records(path: Path) -> list[TurnRecord]:
    """All records of a records file; a torn (unterminated, unparsable) last line is skipped."""
    if not path.exists():
        return []
    records: list[TurnRecord] = []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError(f"a record is a JSON object, not {type(data).__name__}")
            records.append(TurnRecord.from_json(formats.check(data, formats.RECORDS_FORMAT, f"{path}:{i}")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
            is_last = all(not rest.strip() for rest in lines[i:])
            if is_last:
                warnings.warn(f"{path}:{i}: skipping a torn last line (the run was interrupted while writing it); "
                              "the same `ivbench eval` command redoes its dialogue", stacklevel=2)
                continue
            raise RunDirError(f"{path}:{i}: corrupt record ({exc}); the file was edited or damaged") from None
    return records


def record_line(record: TurnRecord) -> str:
    """A record as its line of records.jsonl (or records.partial.jsonl), format version included."""
    return json.dumps(formats.stamp(record.to_json(), formats.RECORDS_FORMAT), sort_keys=True, default=str) + "\n"


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as indented JSON at `path`, through a temporary file renamed over it: never half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # name_key -> the owner / dialogue id given it in this session (see audio_path).
        self._owners: dict[str, str] = {"user": "user"}
        self._dialogues: dict[str, str] = {}

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def records_path(self) -> Path:
        return self.root / RECORDS

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # -- manifest ---------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        if not self.exists():
            raise RunDirError(f"{self.root}: not a run directory (no {MANIFEST}); `ivbench eval --out DIR` makes one")
        try:
            with open(self.manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{self.manifest_path}: not valid JSON ({exc}); the file was edited or damaged") from None
        if not isinstance(manifest, dict):
            raise RunDirError(f"{self.manifest_path}: a manifest is a JSON object; the file was edited or damaged")
        formats.check(manifest, formats.MANIFEST_FORMAT, str(self.manifest_path))
        return manifest

    def check_writable(self, what: str) -> None:
        """Raise RunDirError, before any work, when files cannot be written here (a read-only copy)."""
        try:
            self._probe_write()
        except OSError as exc:
            raise RunDirError(f"{self.root}: cannot write {what} here ({exc.strerror or exc}); copy the run "
                              "directory somewhere writable and give that copy") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.manifest_path, formats.stamp(manifest, formats.MANIFEST_FORMAT))

    @contextlib.contextmanager
    def claim(self, fresh: bool) -> Iterator[None]:
        """Make sure the run can be written at `root` before any system works, and hold its lock
        (`lock.writing`) for the block: a new or empty folder, or a run directory (discarded first
        with `fresh`, once the lock is held). A folder holding other files is refused: ivbench
        would mix its files with them, and `fresh` would delete them."""
        root = self.root
        try:
            if root.exists() and not root.is_dir():
                raise RunDirError(f"{root}: is a file, not a folder; give --out (or out:) a folder for the run")
            if root.is_dir() and not self.exists() and any(p.name != LOCK for p in root.iterdir()):
                raise RunDirError(f"{root}: this folder holds other files and is not a run directory (no {MANIFEST}); "
                                  "give --out (or out:) a new or empty folder")
            root.mkdir(parents=True, exist_ok=True)
            self._probe_write()  # writable, now rather than after the first dialogue
        except OSError as exc:  # a parent that is a file, a read-only or missing mount, no permission
            raise RunDirError(f"{root}: cannot be made or written as the run directory "
                              f"({exc.strerror or exc}); give --out (or out:) a folder you can write") from None
        with writing(root):
            if fresh and self.exists():
                self._discard_run()
            yield

    def _discard_run(self) -> None:
        """`--fresh`: everything in the run directory but the lock this command holds."""
        for path in self.root.iterdir():
            if path.name == LOCK:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _probe_write(self) -> None:
        """Write and remove a scratch file here; OSError when files cannot be written."""
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ivbench-write-check-"):
            pass

    def open(self, manifest: dict[str, Any]) -> bool:
        """Create the run, or check that `manifest` may resume it; True when resuming."""
        if not self.exists():
            self.write_manifest(manifest)
            return False
        old = self.read_manifest()
        identity = manifest["identity"]
        # Runs made before the manifest had an "identity" kept it among their "config".
        before = old.get("identity") or {key: old.get("config", {}).get(key) for key in identity}
        for key, value in identity.items():
            # A key an older ivbench did not record (system_options) cannot be compared.
            if key in before and before[key] != value:
                raise ConfigMismatch(f"{self.root} holds a run with {_difference(key, before[key], value)}; "
                                     "use another --out, or --fresh to discard the old run")
        manifest = {**manifest, "created": old.get("created", manifest.get("created")),
                    "sessions": old.get("sessions", []) + manifest.get("sessions", [])}
        manifest["task"] = self._same_dialogues(old.get("task") or {}, manifest.get("task") or {})
        self.write_manifest(manifest)
        return True

    def _same_dialogues(self, before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
        """`now`'s task entry keeping the digests of dialogues run before (a lower --limit does not
        forget them), after checking that no dialogue run before has changed since."""
        old, new = before.get("dialogue_digests") or {}, now.get("dialogue_digests") or {}
        changed = sorted(d for d in set(old) & set(new) if old[d] != new[d])
        if changed:
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            shown = ", ".join(repr(d) for d in changed[:5]) + more
            raise ConfigMismatch(f"{self.root}: dialogue {shown} of task {now.get('name')!r} changed since the run "
                                 "recorded it (turn text, audio file or reference); use --fresh to start the run "
                                 "again, or another --out")
        return {**now, "dialogue_digests": {**old, **new}} if new or old else now

    def note_loaded(self, label: str, info: dict[str, Any]) -> None:
        """What a system says of itself once loaded (model size, dtype, the engine it chose),
        kept with this session of the run: options alone do not say what ran."""
        manifest = self.read_manifest()
        session = manifest.setdefault("sessions", [{}])[-1]
        session.setdefault("loaded", {})[label] = json.loads(json.dumps(info, default=str))
        self.write_manifest(manifest)

    def note_session(self, key: str, value: Any, merge: bool = False) -> None:
        """Something this session of the run learnt as it went (its workers and what they ran on,
        contention), kept with the session; `merge` adds a mapping's keys to those there."""
        manifest = self.read_manifest()
        session = manifest.setdefault("sessions", [{}])[-1]
        value = json.loads(json.dumps(value, default=str))
        if merge and isinstance(value, dict) and isinstance(session.get(key), dict):
            session[key].update(value)
        else:
            session[key] = value
        self.write_manifest(manifest)

    # -- records ----------------------------------------------------------------------------
    def records(self) -> list[TurnRecord]:
        return read_jsonl_records(self.records_path)

    def append(self, record: TurnRecord) -> None:
        line = record_line(record)
        with open(self.records_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def completed_dialogues(self) -> dict[tuple[str, str], list[TurnRecord]]:
        """(system, dialogue id) -> its records, for dialogues with every turn recorded."""
        return {key: recs for key, recs in self._by_dialogue(self.records()).items()
                if _is_complete(recs)}

    def drop_incomplete(self) -> int:
        """Move records of half-done dialogues to records.partial.jsonl; returns how many."""
        records = self.records()
        by_dialogue = self._by_dialogue(records)
        partial = [r for recs in by_dialogue.values() if not _is_complete(recs) for r in recs]
        # Count a torn (unterminated) last line too, so it is rewritten away before anything is
        # appended after it.
        raw = self.records_path.read_bytes() if self.records_path.exists() else b""
        raw_lines = sum(1 for line in raw.split(b"\n") if line.strip())
        if not partial and raw_lines == len(records):
            return 0
        keep = [r for recs in by_dialogue.values() if _is_complete(recs) for r in recs]
        if partial:
            with open(self.root / PARTIAL, "a", encoding="utf-8") as f:
                for r in partial:
                    f.write(record_line(r))
                f.flush()
                os.fsync(f.fileno())
        self._rewrite(keep)
        return len(partial)

    def remove_dialogues(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget whole dialogues (to redo them), keeping their records in records.partial.jsonl."""
        keys = set(keys)
        records = self.records()
        gone = [r for r in records if (r.system, r.dialogue_id) in keys]
        if not gone:
            return
        with open(self.root / PARTIAL, "a", encoding="utf-8") as f:
            for r in gone:
                f.write(record_line(r))
        self._rewrite([r for r in records if (r.system, r.dialogue_id) not in keys])

    def _rewrite(self, records: list[TurnRecord]) -> None:
        tmp = self.records_path.with_name(RECORDS + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(record_line(r))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.records_path)

    @staticmethod
    def _by_dialogue(records: list[TurnRecord]) -> dict[tuple[str, str], list[TurnRecord]]:
        grouped: dict[tuple[str, str], list[TurnRecord]] = defaultdict(list)
        for r in records:
            grouped[(r.system, r.dialogue_id)].append(r)
        return grouped

    # -- audio ------------------------------------------------------------------------------
    def audio_path(self, owner: str, dialogue_id: str, turn_index: int) -> Path:
        """Where a turn's audio goes; `owner` is "user" or a system label.

        Task files and run configs refuse ids and labels that share a file name; this refuses
        them too (for tasks made by code), rather than let one reply overwrite another's audio.
        """
        self._claim(self._owners, owner, "system labels", ConfigError, "label")
        self._claim(self._dialogues, dialogue_id, "dialogue ids", TaskFileError, "id")
        return self.root / "audio" / safe_name(owner) / safe_name(dialogue_id) / f"turn{turn_index}.wav"

    @staticmethod
    def _claim(claimed: dict[str, str], text: str, what: str, error: type[Exception], noun: str) -> None:
        first = claimed.setdefault(name_key(text), text)
        if first != text:
            raise error(f"{what} {first!r} and {text!r} map to the same audio folder {safe_name(text)!r} "
                        f"(file names keep letters, digits and ._=- and ignore case); give each a distinct {noun}")

    def relative(self, path: Optional[Path]) -> Optional[str]:
        return None if path is None else path.relative_to(self.root).as_posix()


def _difference(key: str, before: Any, now: Any) -> str:
    """What differs in one identity key, naming the entry (a system label) when it is a mapping."""
    if isinstance(before, dict) and isinstance(now, dict):
        for entry in sorted(set(before) | set(now)):
            if before.get(entry) != now.get(entry):
                return f"another {key!r} for {entry!r} ({before.get(entry)!r}, now {now.get(entry)!r})"
    return f"another {key!r} ({before!r}, now {now!r})"


def _is_complete(records: list[TurnRecord]) -> bool:
    if not records:
        return False
    attempt = max(r.attempt for r in records)
    indices = sorted(r.turn_index for r in records if r.attempt == attempt)
    return indices == list(range(records[0].n_turns)) and len(records) == len(indices)
