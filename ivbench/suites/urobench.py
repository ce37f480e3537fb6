"""URO-Bench (Yan et al. 2025, arXiv 2502.17810) as an ivbench task.

URO-Bench publishes its data as one zip (``URO-Bench-data.zip`` on the hub, Honggao/URO-Bench);
unzipped, each test set is ``<root>/<track>/<Dataset>/test.jsonl`` with wav files beside it.
A single-round row is ``{"source_wav", "source_text", "target_text", …}``; a multi-round row
(MtBenchEval-en, SpeakerAware-*) is ``{"id", "dialogue": [{"round", "source_wav", "source_text",
"target_text"}, …]}``. ``--task urobench:subset=AlpacaEval,path=/data/URO-Bench-data``;
`subset` is a test set, several joined with ``+``, or a track: ``basic-en``, ``basic-zh``,
``pro-en``, ``pro-zh``. The user turns are the recorded wavs (resampled to 16 kHz); the judge
reads ``source_text`` as the question and ``target_text`` as the reference, as mark.py does.

`code`: a checkout of URO-Bench's code, where the scorer reads the authors' judge prompts
(ivbench ships none of their text; authors.py); the task's default scorer gets it
(``urobench:code=DIR``). Without it the scorer reads ``$IVBENCH_UROBENCH_CODE``, and without
that the judged results are missing, saying how to get it (Repeat's WER rule needs no text).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, cast

from ..errors import ConfigError, TaskFileError
from ..types import Task
from . import authors, catalog
from .source import AudioRef, JsonlShard, LazyDialogues, Stub, StubTurn, text_value

DESCRIPTION = ("URO-Bench (Ruiqi-Yan/URO-Bench; MIT): basic and pro tracks, en and zh: understanding, "
               "reasoning and oral conversation sets, multi-round MtBenchEval and SpeakerAware; each set "
               "scored by its mark.py mode (GPT 1-5 x 20, Yes/No, Repeat WER); overall and per ability. "
               "Score with --metrics urobench")
EXTRA_FIELDS = ("style", "emotion", "requirement")  # read by the gs, ue and ml judge prompts


def datasets_of(spec: Optional[str]) -> list[str]:
    if not spec:
        raise ConfigError("urobench: give subset=NAME (a test set such as AlpacaEval or MtBenchEval-en, several "
                          f"joined with '+', or a track: {', '.join(catalog.UROBENCH_GROUPS)})")
    names: list[str] = []
    for part in spec.split("+"):
        part = part.strip()
        if part in catalog.UROBENCH_GROUPS:
            names += catalog.UROBENCH_GROUPS[part]
        elif part in catalog.UROBENCH:
            names.append(part)
        else:
            raise ConfigError(f"urobench: unknown test set {part!r}; sets: {', '.join(catalog.UROBENCH)}; tracks: "
                              f"{', '.join(catalog.UROBENCH_GROUPS)}")
    return names


def _jsonl(root: Path, name: str) -> Path:
    info = catalog.UROBENCH[name]
    for candidate in (root / info.track / name / "test.jsonl", root / name / "test.jsonl"):
        if candidate.is_file():
            return candidate
    raise TaskFileError(f"{root}: no {info.track}/{name}/test.jsonl (the folder URO-Bench-data.zip unzips to: "
                        "`huggingface-cli download Honggao/URO-Bench URO-Bench-data.zip --repo-type dataset`)")


def _target(row: dict[str, Any], where: str) -> Optional[str]:
    value = row.get("target_text")
    if isinstance(value, list):  # several acceptable answers: URO-Bench joins them with " / "
        return " / ".join(str(v) for v in value)
    return text_value(row, "target_text", where, required=False)


def _turn(shard: JsonlShard, row: dict[str, Any], where: str) -> StubTurn:
    text = text_value(row, "source_text", where)
    assert text is not None
    # A row without recorded audio is spoken by the run's voice (`--voice`), as a task file's turn is.
    wav = text_value(row, "source_wav", where, required=False)
    audio = AudioRef(file=shard.path.parent / wav) if wav else None
    return StubTurn(text.strip(), audio, _target(row, where))


def _stubs(name: str, shard: JsonlShard) -> list[Stub]:
    info = catalog.UROBENCH[name]
    meta = {"suite": "urobench", "scorer": info.mode, "dataset": name, "track": info.track,
            "language": info.language, "ability": info.ability}
    columns = ["id", "dialogue", "source_wav", "source_text", "target_text", *EXTRA_FIELDS]
    out = []
    for i, row in enumerate(shard.iter_rows(columns)):
        where = shard.where(i)
        extra = {k: str(row[k]) for k in EXTRA_FIELDS if row.get(k) is not None}
        if info.multi_round:
            rounds = row.get("dialogue")
            if not isinstance(rounds, list) or not rounds or not all(isinstance(r, dict) for r in rounds):
                raise TaskFileError(f"{where}: field 'dialogue': a non-empty list of rounds")
            turns = [_turn(shard, r, f"{where}: dialogue[{j}]") for j, r in enumerate(rounds)]
            row_id = str(row.get("id", i))
        else:
            turns = [_turn(shard, row, where)]
            row_id = f"{i:04d}"  # URO-Bench numbers single-round rows by position
        out.append(Stub(f"{name}-{row_id}", turns, category=name, metadata={**meta, **extra, "row": i}))
    return out


def urobench(subset: Optional[str] = None, path: Optional[str] = None, code: Optional[str] = None) -> Task:
    """The URO-Bench task (options: subset, path, code); see the module docstring."""
    names = datasets_of(subset)
    scorer = authors.task_scorer("urobench", code)
    if not path:
        raise ConfigError("urobench: give path=FOLDER, the unzipped URO-Bench-data (URO-Bench publishes a zip, "
                          "not a `datasets` dataset; see the README, 'Suites')")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise TaskFileError(f"{root}: URO-Bench data folder not found")
    stubs: list[Stub] = []
    for name in names:
        stubs += _stubs(name, JsonlShard(_jsonl(root, name)))
    seen: set[str] = set()
    for stub in stubs:
        if stub.id in seen:
            raise TaskFileError(f"{root}: dialogue id {stub.id!r} appears twice (a multi-round 'id' is repeated)")
        seen.add(stub.id)
    # A Sequence, not a list: the runner slices it (`--limit`), and only the dialogues it takes
    # have their audio decoded (source.LazyDialogues).
    return Task(name=f"urobench-{subset if '+' not in str(subset) else 'custom'}",
                dialogues=cast(list, LazyDialogues(stubs)), description=DESCRIPTION,
                source="Honggao/URO-Bench (github.com/Ruiqi-Yan/URO-Bench)", licence="MIT", path=str(root),
                options={"subset": subset, "path": path, "code": code, "scorers": [scorer]})
