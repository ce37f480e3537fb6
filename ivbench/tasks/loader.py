"""The task file format and its validation.

A task is a YAML file::

    name: demo
    description: one line
    source: where the dialogues come from
    licence: their licence            # or `license`
    judge_prompt: llama-omni          # optional: llama-omni, content-style or mt-bench
    references: answers               # or expected-words (read-aloud, T2S); default answers
    options:                          # task options and their defaults
      categories: [writing, roleplay] # a list, "a+b", or "all"
    dialogues_file: demo.jsonl        # or `dialogues:` inline, same shape as a JSONL line

and each dialogue (a JSONL line, or an item of `dialogues`) is::

    {"id": "coffee-1", "category": "everyday", "metadata": {...},
     "turns": [{"text": "…", "audio": "audio/coffee-1-0.wav", "reference": "…"}, "plain text turn"]}

`audio` paths are relative to the task file and may not leave its folder. A bare .jsonl file
is a task too, named after the file.

Everything a task file can set is checked when it is loaded, before anything is generated, and
every error names the file, the line and the field (``t.yaml:14: field 'dialogues[2].turns[0].text':
expected a string, got a list``). Dialogue ids name the run's audio folders, so two ids may not
map to the same folder: ids that differ only in case, in characters other than letters, digits
and ``._=-``, or after their first 120 characters are refused, naming both lines.

Limits (each overridden by its environment variable; see also `ivbench.yaml_file` for the
file size, nesting depth and YAML alias limits):

- ``IVBENCH_MAX_DIALOGUES`` (100,000): dialogues in one task;
- ``IVBENCH_MAX_TURNS`` (100): user turns in one dialogue;
- ``IVBENCH_MAX_TEXT_CHARS`` (20,000): characters in one string of a dialogue (turn text,
  reference, id, category, metadata value).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union
from collections.abc import Callable

from ..errors import TaskFileError
from ..store.run_store import name_key, safe_name
from ..types import REFERENCE_KINDS, REFERENCES_ANSWERS, Dialogue, Task, UserTurn
from ..yaml_file import (MAX_DEPTH, Limit, Where, decode_text, got, kind, nested_too_deep, read_limited,
                         read_yaml_file, shown)

HEADER_FIELDS = {"name", "description", "source", "licence", "license", "judge_prompt",
                 "options", "references", "dialogues_file", "dialogues"}
DIALOGUE_FIELDS = {"id", "category", "turns", "metadata"}
TURN_FIELDS = {"text", "audio", "reference"}
TASK_OPTIONS = {"categories"}

MAX_DIALOGUES = Limit("IVBENCH_MAX_DIALOGUES", 100_000)
MAX_TURNS = Limit("IVBENCH_MAX_TURNS", 100)
MAX_TEXT_CHARS = Limit("IVBENCH_MAX_TEXT_CHARS", 20_000)

JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Limits:
    """The limits in force for one load (read from the environment once)."""

    dialogues: int
    turns: int
    text: int
    depth: int

    @classmethod
    def read(cls) -> Limits:
        return cls(MAX_DIALOGUES.get(), MAX_TURNS.get(), MAX_TEXT_CHARS.get(), MAX_DEPTH.get())


def _fail(where: object, message: str) -> TaskFileError:
    return TaskFileError(f"{where}: {message}")


def _on_line(where: Where) -> str:
    line = where.line_no
    return f" on line {line}" if line else ""


# --- values ---------------------------------------------------------------------------------

def _check_chars(value: str, where: Where, limits: Limits) -> None:
    if len(value) > limits.text:
        raise _fail(where, f"{len(value):,} characters, more than one string of a dialogue may have "
                           f"({MAX_TEXT_CHARS.hint(limits.text)})")
    if "\x00" in value:
        raise _fail(where, "contains a NUL character")


def _text(value: Any, where: Where, limits: Limits, what: str, required: bool = True) -> Optional[str]:
    """A non-empty string; `what` says what to give when it is missing or empty."""
    if value is None:
        if required:
            raise _fail(where, f"missing; {what}")
        return None
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, {got(value)}")
    if not value.strip():
        raise _fail(where, f"empty; {what}")
    _check_chars(value, where, limits)
    return value


def _header_text(value: Any, where: Where, limits: Limits) -> str:
    """An optional header string (description, source, licence): "" when absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, {got(value)}")
    _check_chars(value, where, limits)
    return value.strip()


def _reject_unknown(data: dict[str, Any], allowed: set[str], where: Where, holder: str) -> None:
    """An unknown key is named with its place and the keys `holder` (a dialogue, …) may have."""
    unknown = [str(key) for key in data if key not in allowed]
    if unknown:
        raise _fail(where.at(min(unknown)), f"unknown field; {holder} has {', '.join(sorted(allowed))}")


def _check_json_values(value: Any, where: Where, limits: Limits) -> None:
    """Free-form values (metadata) are JSON values, each string within the text limit."""
    stack: list[tuple[Any, Where]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            stack.extend((child, at.at(str(key))) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, at.at(i)) for i, child in enumerate(item))
        elif isinstance(item, str):
            _check_chars(item, at, limits)
        elif not isinstance(item, JSON_SCALARS):
            raise _fail(at, f"expected a JSON value (string, number, true/false, null, list, mapping), "
                            f"got {kind(item)}; quote it")


# --- dialogues ------------------------------------------------------------------------------

def _check_audio_path(task_dir: Path, value: Any, where: Where, limits: Limits) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"expected a path (string) relative to the task file, {got(value)}")
    _check_chars(value, where, limits)
    try:
        resolved = (task_dir / value).resolve()
        inside = resolved.is_relative_to(task_dir.resolve())
        found = resolved.is_file()
    except OSError as exc:  # a name too long for the file system, a loop of links
        raise _fail(where, f"{shown(value)} cannot be used as a path ({exc.strerror or exc})") from None
    if not inside:
        raise _fail(where, f"{shown(value)} leaves the task's folder {task_dir}; "
                           "keep recorded audio inside the folder of the task file")
    if not found:
        raise _fail(where, f"audio file {resolved} not found")
    return str(resolved)


def _turn(value: Any, where: Where, limits: Limits, task_dir: Path) -> UserTurn:
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict):
        raise _fail(where, f"a turn is a string or a mapping with 'text', {got(value)}")
    _reject_unknown(value, TURN_FIELDS, where, "a turn")
    text = _text(value.get("text"), where.at("text"), limits,
                 "every turn needs its text (the script, also used to speak it)")
    assert text is not None  # required
    audio = value.get("audio")
    audio_path = _check_audio_path(task_dir, audio, where.at("audio"), limits) if audio is not None else None
    reference = value.get("reference")
    if reference is not None:
        if not isinstance(reference, str):
            raise _fail(where.at("reference"), f"expected a string, {got(reference)}")
        _check_chars(reference, where.at("reference"), limits)
    return UserTurn(text=text.strip(), audio_path=audio_path, reference=reference)


def _turns(value: Any, where: Where, limits: Limits, task_dir: Path) -> list[UserTurn]:
    if value is None:
        raise _fail(where, "missing; give a list of user turns")
    if not isinstance(value, list):
        raise _fail(where, f"expected a list of user turns, {got(value)}")
    if not value:
        raise _fail(where, "empty; give at least one user turn")
    if len(value) > limits.turns:
        raise _fail(where, f"{len(value):,} turns, more than a dialogue may have ({MAX_TURNS.hint(limits.turns)})")
    return [_turn(turn, where.at(i), limits, task_dir) for i, turn in enumerate(value)]


def _dialogue_id(value: Any, where: Where, limits: Limits) -> str:
    if value is None:
        raise _fail(where, "missing; every dialogue needs a unique id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # datasets often number their questions
    if not isinstance(value, str):
        raise _fail(where, f"expected a string (or an integer), {got(value)}")
    if not value.strip():
        raise _fail(where, "empty; every dialogue needs a unique id")
    _check_chars(value, where, limits)
    return value


def parse_dialogue(data: Any, where: Where, limits: Optional[Limits] = None,
                   task_dir: Optional[Path] = None) -> Dialogue:
    """One dialogue (a JSONL line or an item of `dialogues`) at `where`, checked field by field."""
    limits = limits or Limits.read()
    task_dir = task_dir if task_dir is not None else Path(where.file).parent
    if not isinstance(data, dict):
        raise _fail(where, f"a dialogue is a mapping with 'id' and 'turns', {got(data)}")
    _reject_unknown(data, DIALOGUE_FIELDS, where, "a dialogue")
    dialogue_id = _dialogue_id(data.get("id"), where.at("id"), limits)
    turns = _turns(data.get("turns"), where.at("turns"), limits, task_dir)
    category = _text(data.get("category"), where.at("category"), limits,
                     "leave 'category' out, or name the category", required=False)
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise _fail(where.at("metadata"), f"expected a mapping, {got(metadata)}")
    _check_json_values(metadata, where.at("metadata"), limits)
    return Dialogue(id=dialogue_id, turns=turns, category=category, metadata=metadata)


def _json_line(text: str, path: Path, line_no: int, limits: Limits) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskFileError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:  # the json module parses recursively: thousands of [[[[ end here
        raise TaskFileError(f"{path}:{line_no}: nested more than {limits.depth} lists and mappings deep "
                            f"({MAX_DEPTH.hint(limits.depth)})") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise TaskFileError(f"{path}:{line_no}: not valid JSON ({exc})") from None
    deep = nested_too_deep(data, limits.depth)
    if deep is not None:
        raise _fail(Where(path, deep, line=line_no), f"nested more than {limits.depth} lists and mappings deep "
                                                     f"({MAX_DEPTH.hint(limits.depth)})")
    return data


def _read_jsonl(path: Path, limits: Limits, where: Optional[Where] = None) -> list[tuple[Dialogue, Where]]:
    """The dialogues of a JSONL file, each with where it was written."""
    if not path.is_file():
        raise _fail(where or path, f"dialogues file {path} not found")
    raw = read_limited(path, TaskFileError)
    found: list[tuple[Dialogue, Where]] = []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        if len(found) >= limits.dialogues:
            raise TaskFileError(f"{path}:{line_no}: more than {limits.dialogues:,} dialogues in one task "
                                f"({MAX_DIALOGUES.hint(limits.dialogues)})")
        text = decode_text(line, path, TaskFileError, first_line=line_no)
        data = _json_line(text.removeprefix("\ufeff") if line_no == 1 else text, path, line_no, limits)
        at = Where(path, (), line=line_no)
        found.append((parse_dialogue(data, at, limits, path.parent), at))
    if not found:
        raise _fail(where or path, f"no dialogues in {path}")
    return found


def read_dialogues_jsonl(path: Union[str, Path]) -> list[Dialogue]:
    """The dialogues of a JSONL file, checked (ids included)."""
    found = _read_jsonl(Path(path), Limits.read())
    _check_ids(found)
    return [dialogue for dialogue, _ in found]


def _check_ids(found: list[tuple[Dialogue, Where]]) -> None:
    """Ids are unique, and so are the file names a run gives them (see `safe_name`): two ids that
    differ only in case or punctuation would share audio files."""
    exact: dict[str, Where] = {}
    folded: dict[str, tuple[str, Where]] = {}
    for dialogue, at in found:
        where = at.at("id")
        if dialogue.id in exact:
            raise _fail(where, f"{shown(dialogue.id)} already used{_on_line(exact[dialogue.id])}; ids must be unique")
        exact[dialogue.id] = where
        key = name_key(dialogue.id)
        if key in folded:
            other, other_where = folded[key]
            names = [safe_name(other), safe_name(dialogue.id)]
            folder = shown(names[0]) if names[0] == names[1] else \
                f"{shown(names[0])} and {shown(names[1])}, one on a case-insensitive file system"
            raise _fail(where, f"{shown(dialogue.id)} and {shown(other)}{_on_line(other_where)} map to the same "
                               f"audio folder ({folder}): a run names files after ids, keeping letters, digits and "
                               "._=-, replacing the rest with '_' and cutting at 120 characters; change one id")
        folded[key] = (dialogue.id, where)


# --- options --------------------------------------------------------------------------------

def _categories(value: Any, where: str) -> Optional[list[str]]:
    """The categories an option selects; None for all of them."""
    if value is None or value == "all":
        return None
    if isinstance(value, str):
        value = [c.strip() for c in value.split("+")]
    if not isinstance(value, list):
        raise _fail(where, f"expected 'all', a category, 'a+b' or a list of categories, {got(value)}")
    if not value:
        raise _fail(where, "empty; name at least one category, or 'all'")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _fail(where, f"expected category names, {got(item)}")
    return list(value)


def _check_options(options: Any, where_of: Callable[[str], str], holder: str) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise _fail(where_of(""), f"expected a mapping of task options, {got(options)}")
    for key in options:
        if key not in TASK_OPTIONS:
            raise _fail(where_of(str(key)), f"unknown option; {holder} takes {', '.join(sorted(TASK_OPTIONS))}")
    if "categories" in options:
        _categories(options["categories"], where_of("categories"))
    return dict(options)


def _apply_options(task: Task, defaults: dict[str, Any], default_where: Callable[[str], str],
                   options: dict[str, Any]) -> Task:
    """Task options: the task file's defaults, overridden by those given with the task's name."""
    def given_where(key: str) -> str:
        return f"task {task.name!r} ({task.path})" + (f": option {shown(key)}" if key else "")

    _check_options(options, given_where, "a task")
    merged = {**defaults, **options}
    where = given_where("categories") if "categories" in options else default_where("categories")
    categories = _categories(merged.get("categories"), where)
    if categories is not None:
        known = {d.category for d in task.dialogues if d.category is not None}
        missing = [c for c in categories if c not in known]
        if missing:
            raise _fail(where, f"no category {shown(missing[0])}; categories: "
                               f"{', '.join(sorted(known)) or 'none'} (or 'all')")
        task.dialogues = [d for d in task.dialogues if d.category in categories]
    task.options = merged
    return task


# --- the task file ------------------------------------------------------------------------

def _judge_prompt(value: Any, where: Where) -> Optional[str]:
    """A turn-level judge prompt's name, checked now: the judge runs only after generation."""
    if value is None:
        return None
    from ..judge.prompts import prompt_names

    names = ", ".join(prompt_names("turn"))
    if not isinstance(value, str):
        raise _fail(where, f"expected a judge prompt's name ({names}), {got(value)}")
    if value not in prompt_names("turn"):
        raise _fail(where, f"unknown judge prompt {shown(value)}; prompts: {names}")
    return value


def _resolve_inside(value: Any, where: Where, task_dir: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"expected a file name relative to the task file, {got(value)}")
    if "\x00" in value:
        raise _fail(where, "contains a NUL character")
    try:
        resolved = (task_dir / value).resolve()
    except OSError as exc:
        raise _fail(where, f"{shown(value)} cannot be used as a path ({exc.strerror or exc})") from None
    if not resolved.is_relative_to(task_dir.resolve()):
        raise _fail(where, f"{shown(value)} leaves the task's folder")
    return resolved


def _dialogues(data: dict[str, Any], root: Where, limits: Limits, task_dir: Path) -> list[tuple[Dialogue, Where]]:
    if ("dialogues" in data) == ("dialogues_file" in data):
        raise _fail(root.file, "give exactly one of 'dialogues_file' (a JSONL next to the task) "
                               "or 'dialogues' (inline list)")
    if "dialogues_file" in data:
        where = root.at("dialogues_file")
        return _read_jsonl(_resolve_inside(data["dialogues_file"], where, task_dir), limits, where)
    where = root.at("dialogues")
    items = data["dialogues"]
    if not isinstance(items, list):
        raise _fail(where, f"expected a list of dialogues, {got(items)}")
    if not items:
        raise _fail(where, "empty; give at least one dialogue")
    if len(items) > limits.dialogues:
        raise _fail(where, f"{len(items):,} dialogues, more than a task may have "
                           f"({MAX_DIALOGUES.hint(limits.dialogues)})")
    return [(parse_dialogue(item, where.at(i), limits, task_dir), where.at(i)) for i, item in enumerate(items)]


def _yaml_task(path: Path, limits: Limits) -> tuple[Task, dict[str, Any], Callable[[str], str]]:
    """The task a YAML file describes, its default options and where they were written."""
    doc = read_yaml_file(path, TaskFileError)
    data, root = doc.data, doc.where()
    if not isinstance(data, dict):
        raise _fail(path, f"a task file is a YAML mapping with 'name' and 'dialogues_file' or 'dialogues', "
                          f"{got(data)}")
    _reject_unknown(data, HEADER_FIELDS, root, "a task file")
    name = _text(data.get("name"), root.at("name"), limits, "give the task a name")
    assert name is not None  # required
    if "licence" in data and "license" in data:
        raise _fail(root.at("license"), "give 'licence' or 'license', not both")
    licence = "licence" if "licence" in data else "license"
    header = {key: _header_text(data.get(key), root.at(key), limits) for key in ("description", "source", licence)}
    judge_prompt = _judge_prompt(data.get("judge_prompt"), root.at("judge_prompt"))
    references = data.get("references", REFERENCES_ANSWERS)
    if references not in REFERENCE_KINDS:
        raise _fail(root.at("references"), f"{references!r} is not a kind of reference; use 'answers' "
                    "(reference answers to free-form questions) or 'expected-words' (the words the reply "
                    "should say: read-aloud, T2S)")

    def default_where(key: str) -> str:
        return str(root.at("options", key) if key else root.at("options"))

    defaults = data.get("options")
    defaults = _check_options(defaults if defaults is not None else {}, default_where, "'options'")
    found = _dialogues(data, root, limits, path.parent)
    _check_ids(found)
    task = Task(name=name.strip(), dialogues=[d for d, _ in found], description=header["description"],
                source=header["source"], licence=header[licence], judge_prompt=judge_prompt, path=str(path),
                references=references)
    return task, defaults, default_where


def load_task_file(path: Union[str, Path], **options: Any) -> Task:
    """Load and validate a task (YAML with a header, or a bare JSONL of dialogues)."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: task file not found")
    limits = Limits.read()
    if path.suffix == ".jsonl":
        found = _read_jsonl(path, limits)
        _check_ids(found)
        task = Task(name=path.stem, dialogues=[d for d, _ in found], path=str(path))
        return _apply_options(task, {}, lambda key: str(path), options)
    task, defaults, default_where = _yaml_task(path, limits)
    return _apply_options(task, defaults, default_where, options)
