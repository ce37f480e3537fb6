"""Big Bench Audio (Artificial Analysis, 2024) as an ivbench task.

1,000 spoken questions from four Big Bench Hard categories (formal_fallacies, navigate,
object_counting, web_of_lies), published as an ``audiofolder`` (``metadata.jsonl`` with
``file_name``, ``category``, ``official_answer``, ``id``, and ``data/question_N.mp3``). ``path`` is
that folder (as ``huggingface-cli download ArtificialAnalysis/big_bench_audio --repo-type dataset``
leaves it), a ``save_to_disk`` folder or parquet export of it, or without `path` the hub id.

The dataset has no text of its questions: a turn's text is its ``transcript`` column where a
copy has one (``transcript``, ``question`` or ``text``), otherwise a placeholder naming the
question, so the suite is for speech-input modes (s2s, s2t). The judge then reads the ASR
transcript of the question, as the authors' evaluator reads the question only for reference.

`prompt_file`: the authors' LLM evaluator prompt saved as a file (ivbench ships none of their
text; authors.py); the task's default scorer gets it (``big_bench_audio:prompt_file=FILE``).
Without it the scorer reads ``$IVBENCH_BIG_BENCH_AUDIO_PROMPT``, and without that every
result is missing, saying how to get the prompt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, cast

from ..errors import TaskFileError
from ..types import Task
from . import authors, catalog
from .source import (AudioRef, JsonlShard, LazyDialogues, Shard, Stub, StubTurn, looks_like_hub_id, open_hub,
                     open_split, require_columns, text_value)

DESCRIPTION = ("Big Bench Audio (ArtificialAnalysis/big_bench_audio; MIT): 1,000 spoken Big Bench Hard "
               "questions; accuracy by the authors' LLM evaluator (CORRECT/INCORRECT). Score with "
               "--metrics big_bench_audio")
TEXT_COLUMNS = ("transcript", "question", "text")


def _shards(path: Optional[str]) -> tuple[list[Shard], str]:
    """The shards and the name of their audio column."""
    if path is None or looks_like_hub_id(path):
        return open_hub(path or catalog.BBA_HUB, None, "train"), "audio"
    root = Path(path).expanduser()
    if (root / "metadata.jsonl").is_file():
        return [JsonlShard(root / "metadata.jsonl")], "file_name"
    if not root.is_dir():
        raise TaskFileError(f"{root}: Big Bench Audio folder not found")
    folder = root / "data" if not any(root.glob("train*")) and (root / "data").is_dir() else root
    return open_split(folder, "train"), "audio"


def _stub(shard: Shard, index: int, row: dict[str, Any], audio: str) -> Stub:
    where = shard.where(index)
    category = text_value(row, "category", where)
    answer = text_value(row, "official_answer", where)
    row_id = text_value(row, "id", where)
    if category not in catalog.BBA_CATEGORIES:
        raise TaskFileError(f"{where}: column 'category': {category!r} is none of {', '.join(catalog.BBA_CATEGORIES)}")
    text = next((row[c] for c in TEXT_COLUMNS if isinstance(row.get(c), str) and row[c].strip()), None)
    meta = {"suite": "big_bench_audio", "scorer": "bba", "category": category, "official_answer": answer,
            "id": row_id, "has_text": text is not None}
    text = text or f"(Big Bench Audio question {row_id}, {category}: recorded audio only)"
    return Stub(f"bba-{row_id}", [StubTurn(text.strip(), AudioRef(shard, index, audio))], category=category,
                metadata=meta)


def big_bench_audio(path: Optional[str] = None, category: Optional[str] = None,
                    prompt_file: Optional[str] = None) -> Task:
    """The Big Bench Audio task (options: path, category: one category or several joined with '+',
    prompt_file)."""
    scorer = authors.task_scorer("big_bench_audio", prompt_file)
    shards, audio = _shards(path)
    wanted = set(category.split("+")) if category else set(catalog.BBA_CATEGORIES)
    unknown = wanted - set(catalog.BBA_CATEGORIES)
    if unknown:
        raise TaskFileError(f"big_bench_audio: unknown category {sorted(unknown)[0]!r}; categories: "
                            f"{', '.join(catalog.BBA_CATEGORIES)}")
    stubs: list[Stub] = []
    for shard in shards:
        require_columns(shard, (audio, "category", "official_answer", "id"))
        columns = ["category", "official_answer", "id"] + [c for c in TEXT_COLUMNS if c in shard.columns()]
        for i, row in enumerate(shard.iter_rows(columns)):
            stub = _stub(shard, i, row, audio)
            if stub.category in wanted:
                stubs.append(stub)
    # A Sequence, not a list: the runner slices it (`--limit`), and only the dialogues it takes
    # have their audio decoded (source.LazyDialogues).
    return Task(name="big-bench-audio", dialogues=cast(list, LazyDialogues(stubs)), description=DESCRIPTION,
                source=f"{catalog.BBA_HUB} (Artificial Analysis)", licence="MIT", path=str(path or catalog.BBA_HUB),
                options={"path": path, "category": category, "prompt_file": prompt_file, "scorers": [scorer]})
