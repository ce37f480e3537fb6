"""The task file format and its validation.

A task is a YAML file::

    name: demo
    description: one line
    source: where the dialogues come from
    licence: their licence
    judge_prompt: llama-omni          # optional
    references: answers               # or expected-words (read-aloud, T2S); default answers
    options:                          # task options and their defaults
      categories: [writing, roleplay] # a list, or "all"
    dialogues_file: demo.jsonl        # or `dialogues:` inline, same shape as a JSONL line

and each dialogue (a JSONL line, or an item of `dialogues`) is::

    {"id": "coffee-1", "category": "everyday",
     "turns": [{"text": "…", "audio": "audio/coffee-1-0.wav", "reference": "…"}, "plain text turn"]}

`audio` paths are relative to the task file and may not leave its folder. A bare .jsonl file
is a task too, named after the file. Every error names the file, the line and the field.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import TaskFileError
from ..types import REFERENCE_KINDS, REFERENCES_ANSWERS, Dialogue, Task, UserTurn

HEADER_FIELDS = {"name", "description", "source", "licence", "license", "judge_prompt",
                 "options", "references", "dialogues_file", "dialogues"}
DIALOGUE_FIELDS = {"id", "category", "turns", "metadata"}
TURN_FIELDS = {"text", "audio", "reference"}
TASK_OPTIONS = {"categories"}




def _where(path: Path, line: Optional[int], field: str) -> str:
    return f"{path}" + (f":{line}" if line else "") + (f": field '{field}'" if field else "")


def _reject_unknown(data: dict[str, Any], allowed: set[str], path: Path, line: Optional[int], prefix: str,
                    holder: str) -> None:
    """An unknown key is named with its place and the keys `holder` (a dialogue, …) may have."""
    unknown = set(data) - allowed
    if unknown:
        raise TaskFileError(f"{_where(path, line, prefix + str(sorted(unknown)[0]))}: unknown field; "
                            f"{holder} has {', '.join(sorted(allowed))}")


def _check_audio_path(task_dir: Path, value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TaskFileError(f"{where}: must be a path (string) relative to the task file")
    resolved = (task_dir / value).resolve()
    try:
        resolved.relative_to(task_dir.resolve())
    except ValueError:
        raise TaskFileError(
            f"{where}: {value!r} leaves the task's folder {task_dir}; "
            "keep recorded audio inside the folder of the task file"
        ) from None
    if not resolved.is_file():
        raise TaskFileError(f"{where}: audio file {resolved} not found")
    return str(resolved)


def parse_dialogue(data: Any, path: Path, line: Optional[int], index: int) -> Dialogue:
    if not isinstance(data, dict):
        raise TaskFileError(f"{_where(path, line, '')}: a dialogue must be an object with 'id' and 'turns'")
    _reject_unknown(data, DIALOGUE_FIELDS, path, line, "", "a dialogue")
    dialogue_id = data.get("id", None)
    if dialogue_id is None or str(dialogue_id).strip() == "":
        raise TaskFileError(f"{_where(path, line, 'id')}: missing; every dialogue needs a unique id")
    turns_data = data.get("turns")
    if not isinstance(turns_data, list) or not turns_data:
        raise TaskFileError(f"{_where(path, line, 'turns')}: missing or empty; give a list of user turns")
    turns: list[UserTurn] = []
    for i, turn in enumerate(turns_data):
        field = f"turns[{i}]"
        if isinstance(turn, str):
            turn = {"text": turn}
        if not isinstance(turn, dict):
            raise TaskFileError(f"{_where(path, line, field)}: a turn is a string or an object with 'text'")
        _reject_unknown(turn, TURN_FIELDS, path, line, field + ".", "a turn")
        text = turn.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TaskFileError(f"{_where(path, line, field + '.text')}: missing or empty; "
                                "every turn needs its text (the script, also used to speak it)")
        audio = turn.get("audio")
        audio_path = (_check_audio_path(path.parent, audio, _where(path, line, field + ".audio"))
                      if audio is not None else None)
        reference = turn.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise TaskFileError(f"{_where(path, line, field + '.reference')}: must be a string")
        turns.append(UserTurn(text=text.strip(), audio_path=audio_path, reference=reference))
    category = data.get("category")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise TaskFileError(f"{_where(path, line, 'metadata')}: must be an object")
    return Dialogue(id=str(dialogue_id), turns=turns,
                    category=str(category) if category is not None else None, metadata=metadata)


def read_dialogues_jsonl(path: Path) -> list[Dialogue]:
    if not path.is_file():
        raise TaskFileError(f"{path}: dialogues file not found")
    dialogues: list[Dialogue] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskFileError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            dialogue = parse_dialogue(data, path, line_no, len(dialogues))
            if dialogue.id in first_line:
                raise TaskFileError(f"{_where(path, line_no, 'id')}: {dialogue.id!r} already used on line "
                                    f"{first_line[dialogue.id]}; ids must be unique")
            first_line[dialogue.id] = line_no
            dialogues.append(dialogue)
    return dialogues


def _check_unique(dialogues: list[Dialogue], path: Path) -> None:
    seen: set[str] = set()
    for d in dialogues:
        if d.id in seen:
            raise TaskFileError(f"{_where(path, None, 'id')}: dialogue id {d.id!r} appears twice; ids must be unique")
        seen.add(d.id)


def _apply_options(task: Task, options: dict[str, Any], path: Path) -> Task:
    unknown = set(options) - TASK_OPTIONS
    if unknown:
        raise TaskFileError(f"task {task.name!r} ({path}): unknown option {sorted(unknown)[0]!r}; "
                            f"options: {', '.join(sorted(TASK_OPTIONS))}")
    merged = {**task.options, **options}
    categories = merged.get("categories", "all")
    if categories != "all" and categories is not None:
        if isinstance(categories, str):
            categories = [c.strip() for c in categories.split("+") if c.strip()]
        known = {d.category for d in task.dialogues}
        missing = [c for c in categories if c not in known]
        if missing:
            raise TaskFileError(f"task {task.name!r} ({path}): option 'categories': no category {missing[0]!r}; "
                                f"categories: {', '.join(sorted(str(k) for k in known))} (or 'all')")
        task.dialogues = [d for d in task.dialogues if d.category in categories]
    task.options = merged
    return task


def load_task_file(path: Union[str, Path], **options: Any) -> Task:
    """Load and validate a task (YAML with a header, or a bare JSONL of dialogues)."""
    from ..yaml_file import read_yaml_file

    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: task file not found")
    if path.suffix == ".jsonl":
        task = Task(name=path.stem, dialogues=read_dialogues_jsonl(path), path=str(path))
        _check_unique(task.dialogues, path)
        return _apply_options(task, options, path)
    header = read_yaml_file(path, TaskFileError)
    if not isinstance(header, dict):
        raise TaskFileError(f"{path}: a task file is a YAML mapping with 'name' and 'dialogues_file' or 'dialogues'")
    _reject_unknown(header, HEADER_FIELDS, path, None, "", "a task file")
    name = header.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TaskFileError(f"{_where(path, None, 'name')}: missing; give the task a name")
    if ("dialogues" in header) == ("dialogues_file" in header):
        raise TaskFileError(f"{path}: give exactly one of 'dialogues_file' (a JSONL next to the task) "
                            "or 'dialogues' (inline list)")
    if "dialogues_file" in header:
        dialogues = read_dialogues_jsonl(_resolve_inside(path, header["dialogues_file"]))
    else:
        items = header["dialogues"]
        if not isinstance(items, list) or not items:
            raise TaskFileError(f"{_where(path, None, 'dialogues')}: must be a non-empty list")
        dialogues = [parse_dialogue(d, path, None, i) for i, d in enumerate(items)]
    _check_unique(dialogues, path)
    default_options = header.get("options") or {}
    if not isinstance(default_options, dict):
        raise TaskFileError(f"{_where(path, None, 'options')}: must be a mapping")
    _reject_unknown(default_options, TASK_OPTIONS, path, None, "options.", "'options'")
    references = header.get("references", REFERENCES_ANSWERS)
    if references not in REFERENCE_KINDS:
        raise TaskFileError(f"{_where(path, None, 'references')}: {references!r} is not a kind of reference; use "
                            "'answers' (reference answers to free-form questions) or 'expected-words' "
                            "(the words the reply should say: read-aloud, T2S)")
    task = Task(
        name=name.strip(), dialogues=dialogues, references=references,
        description=str(header.get("description", "")).strip(),
        source=str(header.get("source", "")).strip(),
        licence=str(header.get("licence", header.get("license", ""))).strip(),
        judge_prompt=header.get("judge_prompt"), path=str(path), options=dict(default_options),
    )
    return _apply_options(task, options, path)


def _resolve_inside(task_path: Path, value: Any) -> Path:
    where = _where(task_path, None, "dialogues_file")
    if not isinstance(value, str) or not value.strip():
        raise TaskFileError(f"{where}: must be a file name relative to the task file")
    resolved = (task_path.parent / value).resolve()
    try:
        resolved.relative_to(task_path.parent.resolve())
    except ValueError:
        raise TaskFileError(f"{where}: {value!r} leaves the task's folder") from None
    return resolved
