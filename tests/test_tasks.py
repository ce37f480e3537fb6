"""The built-in task files and the task loader's validation (fast, offline)."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ivbench import registry
from ivbench.tasks.loader import TaskFileError, load_task_file
from ivbench.tasks.builtin import builtin_task_dir, builtin_task_files

TASKS = builtin_task_dir()
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
MT_BENCH_DEFAULT = ["writing", "roleplay", "reasoning", "stem", "humanities"]


def _create(spec: str):
    return registry.create("tasks", registry.parse_spec(spec))


def _raw_jsonl(name: str) -> list[dict]:
    with open(TASKS / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --- built-in tasks -----------------------------------------------------------------------

def test_builtin_tasks_are_registered():
    names = set(builtin_task_files())
    assert {"demo", "instructs2s-eval", "mt-bench", "vicuna"} <= names
    known = {e.name for e in registry.entries("tasks")}
    assert names <= known


@pytest.mark.parametrize("name", ["demo", "instructs2s-eval", "mt-bench", "vicuna"])
def test_builtin_task_header(name):
    task = _create(name)
    assert task.name == name
    assert task.description and task.source and task.licence
    ids = [d.id for d in task.dialogues]
    assert len(ids) == len(set(ids))
    assert all(turn.text.strip() for d in task.dialogues for turn in d.turns)
    # The same file loads directly, too.
    direct = load_task_file(builtin_task_files()[name][0])
    assert [d.id for d in direct.dialogues] == ids


def test_demo():
    task = _create("demo")
    assert task.judge_prompt == "llama-omni"
    assert len(task.dialogues) >= 6
    for d in task.dialogues:
        assert 2 <= len(d.turns) <= 4, d.id
        assert d.category == "everyday"
        for turn in d.turns:
            # Written for the ear: no digits, symbols or markdown that a TTS voice reads oddly.
            for text in (turn.text, turn.reference or ""):
                assert not re.search(r"[0-9%$&*#/@+=<>\[\]_`|~^]", text), (d.id, text)
    assert sum(1 for d in task.dialogues for t in d.turns if t.reference) >= 10
    assert "Apache-2.0" in task.licence


def test_instructs2s_eval():
    task = _create("instructs2s-eval")
    assert task.judge_prompt == "llama-omni"
    assert len(task.dialogues) == 199
    assert all(len(d.turns) == 1 for d in task.dialogues)
    categories = Counter(d.category for d in task.dialogues)
    assert categories["helpful_base"] == 129
    assert sum(n for c, n in categories.items() if c.startswith("vicuna/")) == 70
    assert not {"vicuna/coding", "vicuna/math"} & set(categories)
    assert all(d.id.startswith(("helpful_base-", "vicuna-")) for d in task.dialogues)
    assert "CC BY-NC 4.0" in task.licence and "MIT" in task.licence and "Apache-2.0" in task.licence
    assert "alpaca_eval" in task.source and "2409.06666" in task.source


def test_mt_bench_default_and_all():
    raw = _raw_jsonl("mt-bench.jsonl")
    assert len(raw) == 80
    expected_default = sum(1 for r in raw if r["category"] in MT_BENCH_DEFAULT)

    task = _create("mt-bench")
    assert task.judge_prompt == "mt-bench"
    assert task.options["categories"] == MT_BENCH_DEFAULT
    assert len(task.dialogues) == expected_default == 50
    assert {d.category for d in task.dialogues} == set(MT_BENCH_DEFAULT)

    spec = registry.parse_spec("mt-bench:categories=all")
    assert spec.ref == "mt-bench" and spec.options == {"categories": "all"}
    everything = registry.create("tasks", spec)
    assert len(everything.dialogues) == 80
    assert all(len(d.turns) == 2 for d in everything.dialogues)
    assert len({d.id for d in everything.dialogues}) == 80
    assert Counter(d.category for d in everything.dialogues) == Counter(r["category"] for r in raw)

    two = _create("mt-bench:categories=math+coding")
    assert {d.category for d in two.dialogues} == {"math", "coding"}
    assert len(two.dialogues) == sum(1 for r in raw if r["category"] in ("math", "coding"))


def test_mt_bench_references():
    task = _create("mt-bench:categories=all")
    by_id = {d.id: d for d in task.dialogues}
    # question.jsonl's own references take precedence over the GPT-4 reference answers...
    assert by_id["101"].turns[0].reference == "You are in second place."
    assert by_id["101"].metadata["reference_from"] == ["question.jsonl", "question.jsonl"]
    # ...the GPT-4 answer fills a turn question.jsonl leaves empty or has no reference for...
    assert by_id["103"].metadata["reference_from"] == ["question.jsonl", "reference_answer/gpt-4.jsonl"]
    assert by_id["123"].turns[0].reference and "<html" in by_id["123"].turns[0].reference
    # ...and a turn with neither has none.
    assert by_id["81"].turns[0].reference is None
    assert by_id["131"].turns[1].reference is None


def test_vicuna():
    task = _create("vicuna")
    assert len(task.dialogues) == 80
    assert all(len(d.turns) == 1 for d in task.dialogues)
    assert len(set(d.category for d in task.dialogues)) == 9
    assert task.licence == "Apache-2.0" and "FastChat" in task.source


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared reference data not on this machine")
def test_generated_files_match_the_shared_data(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tasks", TASKS / "make_tasks.py")
    make_tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tasks)
    make_tasks.main(["--data", str(SHARED_DATA), "--out", str(tmp_path)])
    for name in ("instructs2s-eval.jsonl", "mt-bench.jsonl", "vicuna.jsonl"):
        assert (tmp_path / name).read_bytes() == (TASKS / name).read_bytes(), name
    with open(SHARED_DATA / "mt_bench" / "question.jsonl", encoding="utf-8") as f:
        questions = [json.loads(line) for line in f if line.strip()]
    assert len(_create("mt-bench").dialogues) == sum(1 for q in questions if q["category"] in MT_BENCH_DEFAULT)


# --- loader errors ------------------------------------------------------------------------

GOOD = {"id": "a", "category": "everyday", "turns": [{"text": "Hello there."}]}


def _task(tmp_path: Path, lines: list, header: str = "", name: str = "t") -> Path:
    """A YAML task with a JSONL dialogues file; `lines` are objects or raw strings."""
    jsonl = tmp_path / f"{name}.jsonl"
    jsonl.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                     encoding="utf-8")
    task = tmp_path / f"{name}.yaml"
    task.write_text(f"name: {name}\ndialogues_file: {name}.jsonl\n" + header, encoding="utf-8")
    return task


def _error(path: Path, **options) -> str:
    with pytest.raises(TaskFileError) as info:
        load_task_file(path, **options)
    return str(info.value)


def test_good_file_loads(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"RIFF")
    task = load_task_file(_task(tmp_path, [
        {**GOOD, "turns": [{"text": "Hi.", "audio": "audio/a.wav", "reference": "Hello."}, "Plain turn."]},
    ]))
    assert task.dialogues[0].turns[0].audio_path == str((tmp_path / "audio" / "a.wav").resolve())
    assert task.dialogues[0].turns[1].text == "Plain turn."


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndialogues_file: [unclosed\n", encoding="utf-8")
    message = _error(path)
    assert str(path) in message and "YAML" in message
    assert re.search(re.escape(str(path)) + r":\d+", message)


def test_malformed_jsonl_line(tmp_path):
    path = _task(tmp_path, [GOOD, "", '{"id": "b", "turns": [}'])
    message = _error(path)
    assert f"{tmp_path / 't.jsonl'}:3:" in message and "JSON" in message


@pytest.mark.parametrize("turns, field", [
    ([{"reference": "Hello."}], "turns[0].text"),
    (["Hi.", {"text": "   "}], "turns[1].text"),
])
def test_missing_text(tmp_path, turns, field):
    message = _error(_task(tmp_path, [GOOD, {"id": "b", "turns": turns}]))
    assert f"{tmp_path / 't.jsonl'}:2:" in message and f"'{field}'" in message


def test_missing_turns(tmp_path):
    message = _error(_task(tmp_path, [{"id": "a"}]))
    assert f"{tmp_path / 't.jsonl'}:1:" in message and "'turns'" in message


def test_missing_id(tmp_path):
    message = _error(_task(tmp_path, [GOOD, {"turns": ["Hi."]}]))
    assert f"{tmp_path / 't.jsonl'}:2:" in message and "'id'" in message


def test_duplicate_id(tmp_path):
    message = _error(_task(tmp_path, [GOOD, {**GOOD, "id": "b"}, GOOD]))
    assert f"{tmp_path / 't.jsonl'}:3:" in message and "'id'" in message and "'a'" in message
    assert "line 1" in message


def test_duplicate_id_inline(tmp_path):
    path = tmp_path / "inline.yaml"
    path.write_text(yaml.safe_dump({"name": "inline", "dialogues": [GOOD, GOOD]}), encoding="utf-8")
    message = _error(path)
    assert f"{path}:7: field 'dialogues[1].id'" in message and "'a'" in message and "line 4" in message


@pytest.mark.parametrize("line, field", [
    ({**GOOD, "speaker": "x"}, "speaker"),
    ({**GOOD, "turns": [{"text": "Hi.", "voice": "piper"}]}, "turns[0].voice"),
])
def test_unknown_dialogue_field(tmp_path, line, field):
    message = _error(_task(tmp_path, [GOOD | {"id": "z"}, line]))
    assert f"{tmp_path / 't.jsonl'}:2:" in message and f"'{field}'" in message and "unknown" in message


def test_unknown_header_field(tmp_path):
    message = _error(_task(tmp_path, [GOOD], header="judge: gpt-4o\n"))
    assert str(tmp_path / "t.yaml") in message and "'judge'" in message and "unknown" in message


def test_audio_escaping_the_task_folder(tmp_path):
    sub = tmp_path / "task"
    sub.mkdir()
    (tmp_path / "x.wav").write_bytes(b"RIFF")  # exists, but outside the task's folder
    path = _task(sub, [{"id": "a", "turns": [{"text": "Hi.", "audio": "../x.wav"}]}])
    message = _error(path)
    assert f"{sub / 't.jsonl'}:1:" in message and "'turns[0].audio'" in message and "leaves" in message


def test_audio_file_missing(tmp_path):
    path = _task(tmp_path, [GOOD, {"id": "b", "turns": [{"text": "Hi.", "audio": "audio/nope.wav"}]}])
    message = _error(path)
    assert f"{tmp_path / 't.jsonl'}:2:" in message and "'turns[0].audio'" in message
    assert "not found" in message and "nope.wav" in message


def test_unknown_task_option(tmp_path):
    path = _task(tmp_path, [GOOD])
    message = _error(path, speakers="all")
    assert str(path) in message and "'speakers'" in message and "categories" in message
    with pytest.raises(TaskFileError, match="speakers"):
        _create("mt-bench:speakers=all")


def test_unknown_task_option_in_header(tmp_path):
    path = _task(tmp_path, [GOOD], header="options:\n  speakers: all\n")
    message = _error(path)
    assert str(path) in message and "'options.speakers'" in message


def test_unknown_category(tmp_path):
    path = _task(tmp_path, [GOOD])
    message = _error(path, categories="everyday+sports")
    assert str(path) in message and "'categories'" in message and "'sports'" in message
    assert "everyday" in message
    header_default = _task(tmp_path, [GOOD], header="options:\n  categories: [sports]\n", name="u")
    assert "'sports'" in _error(header_default)
    with pytest.raises(TaskFileError, match="'nosuch'"):
        _create("mt-bench:categories=nosuch")


def test_bare_jsonl_is_a_task(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "b", "category": "other"}) + "\n",
                    encoding="utf-8")
    task = registry.create("tasks", registry.parse_spec(str(path)))
    assert task.name == "mine" and len(task.dialogues) == 2
    assert [d.id for d in load_task_file(path, categories="other").dialogues] == ["b"]
