"""Regenerate the built-in tasks' JSONL files from the shared reference data.

    python tasks/make_tasks.py [--data DIR] [--out DIR]

--data defaults to ../shared/data relative to the repository root (the folder described by
that folder's README.md); --out defaults to this script's folder (tasks/). Writes:

- instructs2s-eval.jsonl: AlpacaEval helpful_base (129) + vicuna (80) instructions, minus the
  vicuna `coding` and `math` categories = 199 single-turn dialogues (LLaMA-Omni's
  InstructS2S-Eval). source.jsonl gives only the dataset (`source`) and the instruction; the
  vicuna category comes from vicuna_bench/question.jsonl, matched on the exact question text.
- mt-bench.jsonl: the 80 two-turn MT-Bench questions, references per turn: question.jsonl's
  `reference` where that turn's entry is non-empty, else reference_answer_gpt-4.jsonl's answer
  for that turn, else none. metadata.reference_from says which file each turn's came from.
- vicuna.jsonl: the 80 single-turn Vicuna-bench questions.

The question texts are copied unchanged. demo.jsonl is written by hand and is not touched.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"

INSTRUCTS2S_DROPPED_VICUNA_CATEGORIES = ("coding", "math")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def instructs2s_eval(data: Path) -> list[dict[str, Any]]:
    source = read_jsonl(data / "instructs2s_eval" / "source.jsonl")
    vicuna = {q["turns"][0]: q for q in read_jsonl(data / "vicuna_bench" / "question.jsonl")}
    rows: list[dict[str, Any]] = []
    helpful_index = 0
    for item in source:
        dataset, text = item["source"], item["instruction"]
        if dataset == "helpful_base":
            helpful_index += 1
            rows.append({"id": f"helpful_base-{helpful_index:04d}", "category": "helpful_base",
                         "turns": [{"text": text}],
                         "metadata": {"dataset": "helpful_base", "index": helpful_index}})
        elif dataset == "vicuna":
            question = vicuna.get(text)
            if question is None:
                raise SystemExit(f"vicuna instruction not found in vicuna_bench/question.jsonl: {text[:80]!r}")
            if question["category"] in INSTRUCTS2S_DROPPED_VICUNA_CATEGORIES:
                continue
            rows.append({"id": f"vicuna-{question['question_id']}",
                         "category": f"vicuna/{question['category']}",
                         "turns": [{"text": text}],
                         "metadata": {"dataset": "vicuna", "question_id": question["question_id"]}})
        else:
            raise SystemExit(f"unexpected dataset {dataset!r} in source.jsonl")
    if len(rows) != 199:
        raise SystemExit(f"InstructS2S-Eval should have 199 instructions, got {len(rows)}")
    return rows


def mt_bench(data: Path) -> list[dict[str, Any]]:
    questions = read_jsonl(data / "mt_bench" / "question.jsonl")
    gpt4 = {r["question_id"]: r["choices"][0]["turns"]
            for r in read_jsonl(data / "mt_bench" / "reference_answer_gpt-4.jsonl")}
    rows: list[dict[str, Any]] = []
    for q in questions:
        own = q.get("reference") or []
        other = gpt4.get(q["question_id"]) or []
        turns: list[dict[str, Any]] = []
        reference_from: list[Any] = []
        for i, text in enumerate(q["turns"]):
            turn: dict[str, Any] = {"text": text}
            if i < len(own) and own[i].strip():
                turn["reference"], origin = own[i], "question.jsonl"
            elif i < len(other) and other[i].strip():
                turn["reference"], origin = other[i], "reference_answer/gpt-4.jsonl"
            else:
                origin = None
            turns.append(turn)
            reference_from.append(origin)
        metadata: dict[str, Any] = {"question_id": q["question_id"]}
        if any(reference_from):
            metadata["reference_from"] = reference_from
        rows.append({"id": str(q["question_id"]), "category": q["category"], "turns": turns,
                     "metadata": metadata})
    if len(rows) != 80:
        raise SystemExit(f"MT-Bench should have 80 questions, got {len(rows)}")
    return rows


def vicuna_bench(data: Path) -> list[dict[str, Any]]:
    rows = [{"id": str(q["question_id"]), "category": q["category"],
             "turns": [{"text": t} for t in q["turns"]]}
            for q in read_jsonl(data / "vicuna_bench" / "question.jsonl")]
    if len(rows) != 80:
        raise SystemExit(f"Vicuna bench should have 80 questions, got {len(rows)}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"the shared reference data folder (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=HERE, help=f"where to write (default {HERE})")
    args = parser.parse_args(argv)
    for name, make in (("instructs2s-eval", instructs2s_eval), ("mt-bench", mt_bench),
                       ("vicuna", vicuna_bench)):
        rows = make(args.data)
        n = write_jsonl(args.out / f"{name}.jsonl", rows)
        per_category = Counter(r["category"] for r in rows)
        print(f"{name}: {n} dialogues, {sum(len(r['turns']) for r in rows)} turns; "
              + ", ".join(f"{c} {k}" for c, k in sorted(per_category.items())))


if __name__ == "__main__":
    main()
