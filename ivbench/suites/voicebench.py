"""VoiceBench (Chen et al. 2024, arXiv 2410.17196) as an ivbench task.

``--task voicebench:subset=sd-qa,path=/data/voicebench`` reads the subset from a local copy of
the Hugging Face dataset ``hlt-lab/voicebench`` in its published layout (``<subset>/<split>-*.parquet``,
as ``huggingface-cli download`` leaves it, or a ``save_to_disk`` folder), or, without `path`, from
the hub through `datasets` (cached). Each row is one single-turn dialogue: the recorded ``audio``
is the user turn (resampled to 16 kHz), ``prompt`` its text (what text-input modes get and what
the judge reads as the question, as VoiceBench's api_judge.py does).

`subset`: a subset name, several joined with ``+``, or ``leaderboard`` (the nine subsets of the
overall score). `split`: the split(s) to read, ``+``-joined; by default ``test``, every accent of
sd-qa and every domain of mmsu (what the local copy has of them). The dialogues' category is
their subset; what the scorer needs (reference option, ifeval's instruction ids and kwargs, bbh's
row id) is in each dialogue's metadata, so a run is scored without the dataset.

`code`: a checkout of VoiceBench's code, where the scorer reads the authors' judge prompts and
answer rules (ivbench ships none of their text; authors.py); the task's default scorer gets it
(``voicebench:code=DIR``). Without it the scorer reads ``$IVBENCH_VOICEBENCH_CODE``, and
without that the results that need the authors' text are missing, saying how to get it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, cast

from ..errors import ConfigError, TaskFileError
from ..types import Task
from . import authors, catalog
from .rules import BBH_GOLD, bbh_subtask
from .source import (AudioRef, LazyDialogues, Shard, Stub, StubTurn, local_splits, looks_like_hub_id, open_hub,
                     open_split, require_columns, text_value)

DESCRIPTION = ("VoiceBench (hlt-lab/voicebench; Apache-2.0): alpacaeval, alpacaeval_full, commoneval, wildvoice "
               "(GPT score 1-5), sd-qa per accent (judged against the reference), openbookqa, mmsu (MCQ "
               "accuracy), ifeval (strict/loose), advbench (refusal rate), bbh (accuracy); overall as the "
               "leaderboard. Score with --metrics voicebench")


def subsets(spec: Optional[str]) -> list[str]:
    if not spec:
        raise ConfigError(f"voicebench: give subset=NAME (one of {', '.join(catalog.VOICEBENCH)}, several joined "
                          "with '+', or 'leaderboard' for the nine subsets of the overall score)")
    names = list(catalog.VOICEBENCH_LEADERBOARD) if spec == "leaderboard" else [s.strip() for s in spec.split("+")]
    for name in names:
        if name not in catalog.VOICEBENCH:
            raise ConfigError(f"voicebench: unknown subset {name!r}; subsets: {', '.join(catalog.VOICEBENCH)}, "
                              "or 'leaderboard'")
    return names


def _splits(name: str, split: Optional[str], folder: Optional[Path]) -> list[str]:
    if split:
        return [s.strip() for s in split.split("+") if s.strip()]
    wanted = list(catalog.VOICEBENCH[name].splits)
    if folder is None or len(wanted) == 1:
        return wanted
    present = [s for s in wanted if s in set(local_splits(folder))]
    if not present:
        raise TaskFileError(f"{folder}: none of {name}'s splits ({', '.join(wanted)}); splits there: "
                            f"{', '.join(local_splits(folder)) or 'none'}")
    return present


def _subset_folder(root: Path, name: str) -> Path:
    if (root / name).is_dir():
        return root / name
    if root.name == name:
        return root
    raise TaskFileError(f"{root}: no folder {name!r} (a local copy of hlt-lab/voicebench has one folder per subset; "
                        "download it with `huggingface-cli download hlt-lab/voicebench --repo-type dataset "
                        f"--local-dir {root}`)")


def _metadata(name: str, row: dict[str, Any], where: str) -> dict[str, Any]:
    """What the subset's scorer needs of the row, checked now so a bad row fails before any work."""
    scorer = catalog.VOICEBENCH[name].scorer
    meta: dict[str, Any] = {"suite": "voicebench", "subset": name, "scorer": scorer}
    if scorer in ("qa", "mcq", "bbh"):
        meta["reference"] = text_value(row, "reference", where)
    if scorer == "mcq" and meta["reference"] not in ("A", "B", "C", "D"):
        raise TaskFileError(f"{where}: column 'reference': {meta['reference']!r} is not an option letter A-D")
    if scorer == "bbh":
        meta["id"] = text_value(row, "id", where)
        if meta["reference"].lower() not in BBH_GOLD:
            raise TaskFileError(f"{where}: column 'reference': {meta['reference']!r} is none of "
                                f"{', '.join(BBH_GOLD)}")
        if bbh_subtask(meta["id"]) is None:
            raise TaskFileError(f"{where}: column 'id': {meta['id']!r} names none of VoiceBench's bbh subtasks")
    if scorer == "ifeval":
        meta.update(_ifeval(row, where))
    return meta


def _ifeval(row: dict[str, Any], where: str) -> dict[str, Any]:
    ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise TaskFileError(f"{where}: column 'instruction_id_list': a non-empty list of instruction ids")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(k is None or isinstance(k, dict)
                                                                          for k in kwargs):
        raise TaskFileError(f"{where}: column 'kwargs': a list of {len(ids)} objects, one per instruction")
    return {"key": row.get("key"), "instruction_id_list": ids,
            "kwargs": [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]}


def stubs_of(name: str, split: str, shards: list[Shard], multi_split: bool) -> list[Stub]:
    spec = catalog.VOICEBENCH[name]
    out: list[Stub] = []
    offset = 0
    for shard in shards:
        require_columns(shard, ("audio", "prompt", *spec.columns))
        for i, row in enumerate(shard.iter_rows(["prompt", *spec.columns])):
            where = shard.where(i)
            text = text_value(row, "prompt", where)
            assert text is not None
            meta = _metadata(name, row, where)
            meta.update(split=split, row=offset + i)
            own = meta.get("id") or meta.get("key")
            row_id = str(own) if own is not None else str(offset + i)
            dialogue_id = f"{name}-{split}-{row_id}" if multi_split else f"{name}-{row_id}"
            reference = meta.get("reference") if spec.scorer == "qa" else None
            out.append(Stub(dialogue_id, [StubTurn(text.strip(), AudioRef(shard, i, "audio"), reference)],
                            category=name, metadata=meta))
        offset += shard.num_rows
    return out


def _check_unique(stubs: list[Stub], where: str) -> None:
    seen: set[str] = set()
    for stub in stubs:
        if stub.id in seen:
            raise TaskFileError(f"{where}: dialogue id {stub.id!r} appears twice (its row's id/key is not unique)")
        seen.add(stub.id)


def voicebench(subset: Optional[str] = None, path: Optional[str] = None, split: Optional[str] = None,
               code: Optional[str] = None) -> Task:
    """The VoiceBench task (options: subset, path, split, code); see the module docstring."""
    names = subsets(subset)
    scorer = authors.task_scorer("voicebench", code)
    hub = path is None or looks_like_hub_id(path)
    root = None if hub else Path(str(path)).expanduser()
    if root is not None and not root.is_dir():
        raise TaskFileError(f"{root}: VoiceBench folder not found")
    stubs: list[Stub] = []
    for name in names:
        folder = None if root is None else _subset_folder(root, name)
        chosen = _splits(name, split, folder)
        for one in chosen:
            shards = (open_hub(path or catalog.VOICEBENCH_HUB, name, one) if folder is None
                      else open_split(folder, one))
            stubs += stubs_of(name, one, shards, multi_split=len(catalog.VOICEBENCH[name].splits) > 1)
    _check_unique(stubs, str(path or catalog.VOICEBENCH_HUB))
    label = subset if subset and "+" not in subset else "custom"
    # A Sequence, not a list: the runner slices it (`--limit`), and only the dialogues it takes
    # have their audio decoded (source.LazyDialogues).
    return Task(name=f"voicebench-{label}", dialogues=cast(list, LazyDialogues(stubs)), description=DESCRIPTION,
                source=f"{catalog.VOICEBENCH_HUB} (github.com/MatthewCYM/VoiceBench)", licence="Apache-2.0",
                path=str(path or catalog.VOICEBENCH_HUB),
                options={"subset": subset, "path": path, "split": split, "code": code, "scorers": [scorer]})
