"""Task files and run configs: every field checked at load time, errors with file:line: field,
size limits, dialogue ids that map one-to-one to file names, and no traceback for any malformed
input (fast, offline: nothing here generates a run)."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import assert_user_error
from ivbench.cli import main
from ivbench.config import EvalConfig, load_config_file, system_config
from ivbench.errors import ConfigError, IvbenchError, PluginError, TaskFileError
from ivbench.registry import parse_spec
from ivbench.store.run_store import RunStore, name_key, safe_name
from ivbench.tasks.loader import load_task_file
from ivbench.tasks.builtin import builtin_task_files

TURN = {"text": "Hello there.", "reference": "Hi."}
DIALOGUES = [
    {"id": "d0", "category": "everyday", "turns": [TURN, "How are you?"], "metadata": {"n": 1}},
    {"id": "d1", "category": "everyday", "turns": ["What time is it?"]},
    {"id": "d2", "category": "other", "turns": ["Bye."]},
]


def _inline(tmp_path: Path, dialogues: list, name: str = "t", **header) -> Path:
    """A YAML task with its dialogues inline, one field per line (block style)."""
    path = tmp_path / f"{name}.yaml"
    data = {"name": name, **header, "dialogues": dialogues}
    path.write_text(yaml.safe_dump(copy.deepcopy(data), sort_keys=False, default_flow_style=False), encoding="utf-8")
    return path


def _jsonl(tmp_path: Path, lines: list, name: str = "t") -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def _error(path: Path, error: type = TaskFileError, **options) -> str:
    with pytest.raises(error) as info:
        load_task_file(path, **options)
    return str(info.value)


def _line_of(path: Path, text: str, after: int = 0) -> int:
    """The first line (1-based) after line `after` that contains `text`."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if number > after and text in line:
            return number
    raise AssertionError(text)


def _eval(*args: str):
    return CliRunner().invoke(main, ["eval", "--system", "parrot", "--warmup", "0", "--no-progress",
                                     "--no-score", *args], catch_exceptions=True)


# --- YAML errors name the line and the whole field -----------------------------------------

def test_wrong_type_deep_in_an_inline_task_names_line_and_field(tmp_path):
    dialogues = copy.deepcopy(DIALOGUES)
    dialogues[2]["turns"] = [{"text": ["not", "a", "string"]}]
    path = _inline(tmp_path, dialogues)
    line = _line_of(path, "- text:", after=_line_of(path, "id: d2"))
    assert _error(path) == (f"{path}:{line}: field 'dialogues[2].turns[0].text': expected a string, got a list")


def test_missing_field_takes_the_line_of_its_dialogue(tmp_path):
    dialogues = copy.deepcopy(DIALOGUES)
    del dialogues[1]["turns"]
    path = _inline(tmp_path, dialogues)
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, 'id: d1')}: field 'dialogues[1].turns': missing")


@pytest.mark.parametrize("field, value, expected", [
    ("id", ["x"], "field 'dialogues[1].id': expected a string (or an integer), got a list"),
    ("id", True, "field 'dialogues[1].id': expected a string (or an integer), got true/false"),
    ("id", "  ", "field 'dialogues[1].id': empty"),
    ("category", 5, "field 'dialogues[1].category': expected a string, got an integer (5)"),
    ("category", {"a": 1}, "field 'dialogues[1].category': expected a string, got a mapping"),
    ("metadata", ["x"], "field 'dialogues[1].metadata': expected a mapping, got a list"),
    ("turns", {"text": "x"}, "field 'dialogues[1].turns': expected a list of user turns, got a mapping"),
    ("turns", [], "field 'dialogues[1].turns': empty"),
    ("turns", [3], "field 'dialogues[1].turns[0]': a turn is a string or a mapping with 'text', got an integer"),
    ("turns", [{"text": "x", "reference": 4.5}], "field 'dialogues[1].turns[0].reference': expected a string, "
                                                 "got a number (4.5)"),
    ("turns", [{"text": "x", "audio": ["a.wav"]}], "field 'dialogues[1].turns[0].audio': expected a path"),
    ("turns", [{"text": "   "}], "field 'dialogues[1].turns[0].text': empty"),
    ("turns", [{"text": "a\x00b"}], "field 'dialogues[1].turns[0].text': contains a NUL character"),
])
def test_messages_say_what_is_wrong(tmp_path, field, value, expected):
    dialogues = copy.deepcopy(DIALOGUES)
    dialogues[1][field] = value
    path = _inline(tmp_path, dialogues)
    message = _error(path)
    assert message.startswith(f"{path}:") and expected in message, message


def test_metadata_holds_json_values_only(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\ndialogues:\n- id: a\n  turns: [hi]\n  metadata:\n    when: 2024-01-01\n")
    assert _error(path) == f"{path}:6: field 'dialogues[0].metadata.when': expected a JSON value (string, " \
                           "number, true/false, null, list, mapping), got a date; quote it"


@pytest.mark.parametrize("header, expected", [
    ("description: [a, b]\n", "2: field 'description': expected a string, got a list"),
    ("licence: MIT\nlicense: MIT\n", "3: field 'license': give 'licence' or 'license', not both"),
    ("options: [categories]\n", "2: field 'options': expected a mapping of task options, got a list"),
    ("options:\n  categories: {a: 1}\n", "3: field 'options.categories': expected 'all', a category, 'a+b' or a "
                                         "list of categories, got a mapping"),
    ("options:\n  categories: [everyday, 3]\n", "3: field 'options.categories': expected category names, got an "
                                                "integer (3)"),
    ("options:\n  categories: [sports]\n", "3: field 'options.categories': no category 'sports'; categories: "
                                           "everyday, other (or 'all')"),
    ("name: again\n", "2: field 'name': given twice (first on line 1)"),
    ("dialogues_file: x.jsonl\n", "give exactly one of 'dialogues_file'"),
])
def test_header_fields(tmp_path, header, expected):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\n" + header + yaml.safe_dump({"dialogues": DIALOGUES}))
    message = _error(path)
    assert message.startswith(str(path)) and expected in message, message


def test_unknown_judge_prompt_fails_at_load_time_with_the_known_names(tmp_path):
    path = _inline(tmp_path, DIALOGUES, judge_prompt="mt-bnech")
    assert _error(path) == (f"{path}:2: field 'judge_prompt': unknown judge prompt 'mt-bnech'; "
                            "prompts: llama-omni, content-style, mt-bench")
    # ...so `eval` stops before anything is generated.
    result = _eval("--task", str(path), "--out", str(tmp_path / "run"))
    assert_user_error(result, f"{path}:2: field 'judge_prompt': unknown judge prompt 'mt-bnech'")
    assert not (tmp_path / "run").exists()
    assert "got a list" in _error(_inline(tmp_path, DIALOGUES, judge_prompt=["mt-bench"]))
    assert load_task_file(_inline(tmp_path, DIALOGUES, judge_prompt="mt-bench")).judge_prompt == "mt-bench"


@pytest.mark.parametrize("options, expected", [
    ({"categories": 5}, "option 'categories': expected 'all', a category, 'a+b' or a list of categories, got an "
                        "integer"),
    ({"categories": ""}, "option 'categories': expected category names, got a string ('')"),
    ({"categories": []}, "option 'categories': empty"),
    ({"speakers": "all"}, "option 'speakers': unknown option; a task takes categories"),
])
def test_options_given_with_the_task_name(tmp_path, options, expected):
    path = _inline(tmp_path, DIALOGUES)
    message = _error(path, **options)
    assert message.startswith(f"task 't' ({path})") and expected in message, message
    assert [d.id for d in load_task_file(path, categories="other").dialogues] == ["d2"]


def test_run_config_errors_name_line_and_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = {
        "systems:\n  - parrot\n  - name: parrot\n    label: [a, b]\n":
            "bad.yaml:4: field 'systems[1].label': the system's name in the run: expected a string, got a list",
        "use_cache: 'no'\n": "bad.yaml:1: field 'use_cache': expected true or false, got a string ('no')",
        "device: gpu\n": "bad.yaml:1: field 'device': expected one of auto, cpu, cuda, got a string ('gpu')",
        "limit: 2.5\n": "bad.yaml:1: field 'limit': expected an integer, got a number (2.5)",
        "turn_timeout: [1]\n": "bad.yaml:1: field 'turn_timeout': expected a number, got a list",
        "out: {a: 1}\n": "bad.yaml:1: field 'out': expected a folder (a path), got a mapping",
        "metrics:\n  - latency\n  - nosuch\n": "bad.yaml:3: field 'metrics[1]': unknown metric 'nosuch'",
        "metrics:\n  - {name: judge, prompt: nosuch}\n": "bad.yaml:2: field 'metrics[0]': unknown turn-level judge "
                                                        "prompt 'nosuch': use one of llama-omni",
        "judge: {model: x, temperature: warm}\n": "bad.yaml:1: field 'judge'",
        "systems: ['parrot:x=[oops']\n": "bad.yaml:1: field 'systems[0]'",
        "task: demo\ntask: vicuna\n": "bad.yaml:2: field 'task': given twice (first on line 1)",
        "systems: [a/b, a_b]\n": "bad.yaml:1: field 'systems': system labels 'a/b' and 'a_b' would share",
    }
    for text, expected in cases.items():
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config_file(tmp_path / "bad.yaml")
        assert expected in str(info.value), (text, str(info.value))
        assert_user_error(_eval("-c", "bad.yaml", "--out", "run"), expected)
        assert not (tmp_path / "run").exists()


def test_yaml_features_that_stay(tmp_path):
    """Anchors, aliases and merge keys still work where they are modest (the control)."""
    (tmp_path / "run.yaml").write_text(
        "systems:\n  - &base {name: parrot, label: slow, speed: 1}\n  - {<<: *base, label: fast, speed: 2}\n"
        "mode: t2t\nlimit: 3\n")
    kwargs = load_config_file(tmp_path / "run.yaml")
    assert [(s.label, s.spec.options) for s in kwargs["systems"]] == [("slow", {"speed": 1}), ("fast", {"speed": 2})]
    assert kwargs["modes"] == ["t2t"] and kwargs["limit"] == 3


@pytest.mark.parametrize("text, expected", [
    ("name: t\nname2: !!python/object:os.system x\n", ":2: field 'name2': cannot read"),
    ("name: t\ndescription: !!set {a, b}\n", ":2: field 'description': the tag 'tag:yaml.org,2002:set' is not "
                                             "supported"),
    ("name: t\ndescription: " + "9" * 5000 + "\n", ":2: field 'description': "),  # too many digits for int()
    ("name: t\n? [a, b]\n: c\n", ":2: a mapping key is a name, not a list or mapping"),
    ("name: t\ndescription: *nowhere\n", ":2: not valid YAML (found undefined alias 'nowhere')"),
    ("name: t\n---\nname: u\n", ":2: not valid YAML (but found another document)"),
])
def test_yaml_oddities(tmp_path, text, expected):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    message = _error(path)
    assert message.startswith(str(path)) and expected in message, message


# --- bytes that are not text ---------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["yaml", "jsonl"])
def test_bytes_that_are_not_utf8_or_are_nul(tmp_path, suffix):
    good = (yaml.safe_dump({"name": "t", "dialogues": DIALOGUES}) if suffix == "yaml"
            else "".join(json.dumps(d) + "\n" for d in DIALOGUES)).encode()
    lines = good.split(b"\n")
    path = tmp_path / f"t.{suffix}"
    path.write_bytes(b"\n".join(lines[:2] + [lines[2] + b" \xe9"] + lines[3:]))
    message = _error(path)
    assert message.startswith(f"{path}:3: byte 0xe9 at column ") and "not UTF-8" in message, message
    path.write_bytes(b"\n".join(lines[:1] + [b"  \x00" + lines[1]] + lines[2:]))
    assert _error(path).startswith(f"{path}:2: NUL byte at column 3")
    path.write_bytes("".join(DIALOGUES[0]["id"]).encode("utf-16"))
    assert "NUL byte" in _error(path)
    path.write_bytes(b"\xef\xbb\xbf" + good)  # a UTF-8 byte order mark is fine
    assert [d.id for d in load_task_file(path).dialogues] == ["d0", "d1", "d2"]


def test_a_run_config_that_is_not_utf8(tmp_path):
    (tmp_path / "run.yaml").write_bytes(b"task: demo\nout: r\xffn\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:2: byte 0xff at column 7 is not UTF-8"):
        load_config_file(tmp_path / "run.yaml")


# --- limits --------------------------------------------------------------------------------

def test_file_size_limit(tmp_path, monkeypatch):
    path = _jsonl(tmp_path, DIALOGUES)
    size = path.stat().st_size
    monkeypatch.setenv("IVBENCH_MAX_FILE_BYTES", str(size))
    assert len(load_task_file(path).dialogues) == 3  # exactly at the limit
    monkeypatch.setenv("IVBENCH_MAX_FILE_BYTES", str(size - 1))
    assert _error(path) == (f"{path}: {size:,} bytes, larger than a task file or run config may be "
                            f"(the limit is {size - 1:,}; set IVBENCH_MAX_FILE_BYTES to change it)")
    (tmp_path / "run.yaml").write_text("task: demo\n" + "# padding\n" * size)
    with pytest.raises(ConfigError, match="IVBENCH_MAX_FILE_BYTES"):
        load_config_file(tmp_path / "run.yaml")
    # A task file's dialogues file is held to it too.
    header = tmp_path / "h.yaml"
    header.write_text("name: h\ndialogues_file: t.jsonl\n")
    assert "IVBENCH_MAX_FILE_BYTES" in _error(header)


@pytest.mark.parametrize("bad", ["0", "-3", "lots", "1e9"])
def test_a_limit_set_to_nonsense_is_refused(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("IVBENCH_MAX_TURNS", bad)
    with pytest.raises(ConfigError, match=rf"environment variable IVBENCH_MAX_TURNS='{bad}': give a whole number"):
        load_task_file(_jsonl(tmp_path, DIALOGUES))
    monkeypatch.setenv("IVBENCH_MAX_DEPTH", "101")
    monkeypatch.delenv("IVBENCH_MAX_TURNS")
    with pytest.raises(ConfigError, match="at most 100"):
        load_task_file(_jsonl(tmp_path, DIALOGUES))


def test_dialogue_count_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("IVBENCH_MAX_DIALOGUES", "3")
    assert len(load_task_file(_jsonl(tmp_path, DIALOGUES)).dialogues) == 3
    monkeypatch.setenv("IVBENCH_MAX_DIALOGUES", "2")
    path = _jsonl(tmp_path, DIALOGUES)
    assert _error(path) == (f"{path}:3: more than 2 dialogues in one task (the limit is 2; set "
                            "IVBENCH_MAX_DIALOGUES to change it)")
    inline = _inline(tmp_path, DIALOGUES)
    assert _error(inline).startswith(f"{inline}:2: field 'dialogues': 3 dialogues, more than a task may have")


def test_turn_count_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("IVBENCH_MAX_TURNS", "2")
    assert load_task_file(_jsonl(tmp_path, DIALOGUES))
    path = _jsonl(tmp_path, [DIALOGUES[1], {"id": "x", "turns": ["a", "b", "c"]}])
    assert _error(path) == (f"{path}:2: field 'turns': 3 turns, more than a dialogue may have (the limit is 2; "
                            "set IVBENCH_MAX_TURNS to change it)")


def test_text_length_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("IVBENCH_MAX_TEXT_CHARS", "12")
    assert load_task_file(_jsonl(tmp_path, [{"id": "x", "turns": ["Hello there."]}]))  # 12 characters
    cases = [({"id": "x", "turns": ["Hello there!!"]}, "turns[0].text"),
             ({"id": "x", "turns": [{"text": "Hi.", "reference": "a" * 13}]}, "turns[0].reference"),
             ({"id": "x" * 13, "turns": ["Hi."]}, "id"),
             ({"id": "x", "turns": ["Hi."], "metadata": {"a": [{"b": "c" * 13}]}}, "metadata.a[0].b")]
    for line, field in cases:
        path = _jsonl(tmp_path, [line])
        assert _error(path) == (f"{path}:1: field '{field}': 13 characters, more than one string of a dialogue "
                                "may have (the limit is 12; set IVBENCH_MAX_TEXT_CHARS to change it)")


def test_nesting_depth_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("IVBENCH_MAX_DEPTH", "4")
    # A JSONL line's dialogue, its metadata, a list in it and one more: depth 4 is allowed...
    assert load_task_file(_jsonl(tmp_path, [{"id": "x", "turns": ["Hi."], "metadata": {"a": [[1]]}}]))
    # ...depth 5 is not; in YAML, the file's mapping and the list of dialogues count too.
    path = _jsonl(tmp_path, [{"id": "x", "turns": ["Hi."], "metadata": {"a": [[[1]]]}}])
    assert _error(path) == (f"{path}:1: field 'metadata.a[0][0]': nested more than 4 lists and mappings deep "
                            "(the limit is 4; set IVBENCH_MAX_DEPTH to change it)")
    path = tmp_path / "t.yaml"
    path.write_text("name: t\ndialogues:\n- id: x\n  turns: [Hi.]\n  metadata:\n    a: [1]\n")
    assert _error(path).startswith(f"{path}:6: field 'dialogues[0].metadata.a': nested more than 4 lists")


def test_nesting_far_beyond_the_stack_is_an_error_not_a_recursion_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = _jsonl(tmp_path, ['{"id": "x", "turns": ["Hi."], "metadata": {"a": ' + deep + "}}"])
    assert _error(path).startswith(f"{path}:1: nested more than 32 lists and mappings deep")
    yaml_path = tmp_path / "t.yaml"
    yaml_path.write_text("name: t\ndescription: " + deep + "\n")
    assert _error(yaml_path).startswith(f"{yaml_path}:2: nested more than 32")
    (tmp_path / "run.yaml").write_text("systems:\n  - {name: parrot, x: " + deep + "}\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:2: nested more than 32"):
        load_config_file(tmp_path / "run.yaml")


LAUGHS = "".join(f"  {c}: &{c} [{', '.join([f'*{p}'] * 9 if p else ['lol'] * 9)}]\n"
                 for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


def test_billion_laughs_in_a_task_file_stops_at_the_alias_limit(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text("name: laughs\ndialogues:\n- id: a\n  turns: [hi]\n  metadata:\n" + LAUGHS.replace("  ", "    "))
    assert path.stat().st_size < 500  # 9**9 "lol"s once expanded
    message = _error(path)
    assert message.startswith(f"{path}:") and "the aliases (*name) in this file repeat too much" in message
    assert "IVBENCH_MAX_ALIAS_EXPANSION" in message
    result = _eval("--task", str(path), "--out", str(tmp_path / "run"))
    assert_user_error(result, str(path), "IVBENCH_MAX_ALIAS_EXPANSION")
    assert not (tmp_path / "run").exists()
    # `description` went into the manifest as str() of all it expands to: bounded the same way.
    four_levels = "".join(LAUGHS.replace("  ", "    ").splitlines(keepends=True)[:4])  # 9**4 strings, ~30,000
    path.write_text("name: laughs\ndialogues:\n- id: a\n  turns: [hi]\n  metadata:\n" + four_levels
                    + "description: [*d, *d, *d, *d]\n")
    message = _error(path)
    assert message.startswith(f"{path}:10: field 'description[") and "the aliases" in message, message


def test_billion_laughs_in_a_run_config(tmp_path):
    (tmp_path / "run.yaml").write_text("systems:\n- name: parrot\n" + LAUGHS)
    with pytest.raises(ConfigError, match=r"run\.yaml:\d+: field 'systems\[0\]\.\w[^']*': the aliases"):
        load_config_file(tmp_path / "run.yaml")


def test_alias_limit_counts_what_is_repeated(tmp_path, monkeypatch):
    path = tmp_path / "t.yaml"
    text = "name: t\ndialogues:\n- id: a\n  turns: [hi]\n  metadata:\n    a: &a [xx, yy]\n    b: *a\n"
    path.write_text(text)
    monkeypatch.setenv("IVBENCH_MAX_ALIAS_EXPANSION", "7")  # the list, two strings of two characters
    assert load_task_file(path).dialogues[0].metadata == {"a": ["xx", "yy"], "b": ["xx", "yy"]}
    monkeypatch.setenv("IVBENCH_MAX_ALIAS_EXPANSION", "6")
    assert _error(path).startswith(f"{path}:7: field 'dialogues[0].metadata.b[1]': the aliases")


# --- dialogue ids map one-to-one to file names ------------------------------------------------

@pytest.mark.parametrize("first, second", [
    ("Coffee-1", "coffee-1"),  # one folder on a case-insensitive file system (macOS, Windows)
    ("a/b", "a_b"),
    ("a b", "a  b"),
    ("..", "_"),
    (".", ".."),
    ("x" * 120 + "-one", "x" * 120 + "-two"),  # cut at 120 characters
])
def test_ids_that_share_a_file_name_are_refused(tmp_path, first, second):
    assert name_key(first) == name_key(second)
    path = _jsonl(tmp_path, [DIALOGUES[1] | {"id": "d"}, {"id": first, "turns": ["a"]}, {"id": second, "turns": ["b"]}])
    message = _error(path)
    assert message.startswith(f"{path}:3: field 'id': {second!r} and {first!r} on line 2 map to the same audio "
                              "folder"), message
    inline = _inline(tmp_path, [{"id": first, "turns": ["a"]}, {"id": second, "turns": ["b"]}])
    assert f"{inline}:6: field 'dialogues[1].id': {second!r} and {first!r} on line 3" in _error(inline)


def test_ids_with_distinct_file_names_load(tmp_path):
    """The control: ids that differ in a kept character (- . = _ or a letter) are fine."""
    ids = ["a-b", "a_b", "a.b", "a=b", "ab", "x" * 119 + "1", "x" * 119 + "2", "42"]
    path = _jsonl(tmp_path, [{"id": i, "turns": ["hi"]} for i in ids] + [{"id": 7, "turns": ["hi"]}])
    task = load_task_file(path)
    assert [d.id for d in task.dialogues] == ids + ["7"]
    assert len({name_key(d.id) for d in task.dialogues}) == len(ids) + 1


@pytest.mark.parametrize("name", sorted(builtin_task_files()))
def test_builtin_task_ids_have_distinct_file_names(name):
    task = load_task_file(builtin_task_files()[name][0], categories="all") if name == "mt-bench" else \
        load_task_file(builtin_task_files()[name][0])
    assert len({name_key(d.id) for d in task.dialogues}) == len(task.dialogues)


def test_audio_layout_is_unchanged(tmp_path):
    """Existing run directories keep their layout (records store these relative paths)."""
    store = RunStore(tmp_path)
    assert store.relative(store.audio_path("cascade:theta=5", "helpful_base-0001", 1)) == \
        "audio/cascade_theta=5/helpful_base-0001/turn1.wav"
    assert store.relative(store.audio_path("user", "81", 0)) == "audio/user/81/turn0.wav"
    assert safe_name("..") == "_" and safe_name("a/../b") == "a_.._b"


def test_the_store_refuses_names_that_would_overwrite_each_other(tmp_path):
    """The last guard, for tasks made by code rather than read from a file."""
    store = RunStore(tmp_path)
    store.audio_path("sys", "a/b", 0)
    store.audio_path("sys", "a/b", 1)  # the same id again is fine
    with pytest.raises(TaskFileError, match="dialogue ids 'a/b' and 'a_b' map to the same audio folder 'a_b'"):
        store.audio_path("other", "a_b", 0)
    with pytest.raises(ConfigError, match="system labels 'user' and 'User'"):
        store.audio_path("User", "a/b", 0)


@pytest.mark.parametrize("labels, modes, expected", [
    (["a/b", "a_b"], [], "system labels 'a/b' and 'a_b' would share the audio folder 'a_b'"),
    (["Mine", "mine"], [], "system labels 'Mine' and 'mine' would share"),
    (["mine", "mine"], [], "two systems share the label 'mine'"),
    (["User"], [], "system label 'User': its audio folder 'User' is where the user's turns are kept"),
    (["a", "A"], ["s2s", "t2t"], "system labels 'a@s2s' and 'A@s2s' would share"),
])
def test_system_labels_that_share_a_folder_are_refused(labels, modes, expected):
    systems = [system_config({"name": "parrot", "label": label}) for label in labels]
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        EvalConfig(systems=systems, modes=modes)


# --- no traceback for any malformed input -------------------------------------------------

BAD_VALUES = [None, "", "\x00", 3, -1, 2.5, True, [], ["x"], [[1]], {}, {"a": 1}, "x" * 30_000,
              [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]


def _paths(value, keys=()):
    """Every field path of a value."""
    yield keys
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, keys + (key,))


def _set(data, keys, value):
    data = copy.deepcopy(data)
    target = data
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return data


def _load_run_config(path: Path) -> EvalConfig:
    return EvalConfig(**load_config_file(path))


def _must_be_a_user_error(path: Path, load) -> str:
    """Either it loads (a mutation can be valid), or it is one line naming the file, in the
    library (an IvbenchError) and through `ivbench eval` (exit 2, no traceback)."""
    try:
        load(path)
    except IvbenchError as exc:
        assert str(path.name) in str(exc), str(exc)
        assert "\n" not in str(exc)
        return "error"
    return "loaded"


def test_fuzz_task_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"name": "t", "description": "d", "licence": "MIT", "judge_prompt": "llama-omni",
            "options": {"categories": ["everyday"]}, "dialogues": DIALOGUES}
    outcomes = []
    for n, keys in enumerate(k for k in _paths(base) if k):
        for m, value in enumerate(BAD_VALUES):
            path = tmp_path / f"t{n}_{m}.yaml"
            path.write_text(yaml.safe_dump(_set(base, keys, value)), encoding="utf-8")
            outcome = _must_be_a_user_error(path, load_task_file)
            if outcome == "error":
                assert_user_error(_eval("--task", path.name, "--out", "run"), path.name)
                assert not (tmp_path / "run").exists()
            outcomes.append(outcome)
    assert outcomes.count("error") > 0.8 * len(outcomes)


TOKENS = [b"[", b"]", b"{", b"}", b":", b",", b'"', b"- ", b"&a ", b"*a", b"<<: ", b"!!", b"\n", b"  ", b"\t",
          b"\xff", b"\x00", b"\xe2\x82", b"1e999", b"null", b"---", b"%YAML 1.1\n", b"? ", b"|", b"#"]


def test_fuzz_bytes(tmp_path, monkeypatch):
    """Seeded random edits of a good task (YAML and JSONL) and run config: a clear error or a
    loaded file, never another exception."""
    monkeypatch.chdir(tmp_path)
    rng = random.Random(20261129)
    goods = {"t.yaml": yaml.safe_dump({"name": "t", "judge_prompt": "mt-bench", "dialogues": DIALOGUES}).encode(),
             "t.jsonl": "".join(json.dumps(d) + "\n" for d in DIALOGUES).encode(),
             "run.yaml": b"task: t.jsonl\nsystems: [parrot, {name: parrot, label: b, speed: 2}]\nlimit: 1\n"
                         b"mode: [t2t]\nmetrics: [latency]\njudge: {model: m, n: 1}\nout: run\n"}
    errors = 0
    for round_ in range(300):
        name = list(goods)[round_ % 3]
        raw = bytearray(goods[name])
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(raw))
            if rng.random() < 0.5:
                raw[at:at] = rng.choice(TOKENS)
            else:
                del raw[at:at + rng.randint(1, 8)]
        (tmp_path / "t.jsonl").write_bytes(goods["t.jsonl"])
        path = tmp_path / name
        path.write_bytes(bytes(raw))
        if name == "run.yaml":
            outcome = _must_be_a_user_error(path, _load_run_config)
            if outcome == "error":
                assert_user_error(_eval("-c", "run.yaml"), "run.yaml")
        else:
            outcome = _must_be_a_user_error(path, load_task_file)
            if outcome == "error":
                assert_user_error(_eval("--task", name, "--out", "run"), name)
        assert not (tmp_path / "run").exists()
        errors += outcome == "error"
    assert errors > 100


def test_fuzz_run_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"task": {"name": "demo"}, "systems": ["parrot", {"name": "parrot", "label": "b", "speed": 2}],
            "voice": "piper:joe", "mode": ["t2t"], "out": "run", "limit": 1, "warmup": 0, "turn_timeout": 10,
            "device": "cpu", "seed": 0, "cache_dir": "cache", "use_cache": True, "metrics": ["latency"],
            "judge": {"model": "m", "temperature": 0}}
    errors = 0
    for n, keys in enumerate(k for k in _paths(base) if k):
        for m, value in enumerate(BAD_VALUES):
            path = tmp_path / f"c{n}_{m}.yaml"
            path.write_text(yaml.safe_dump(_set(base, keys, value)), encoding="utf-8")
            if _must_be_a_user_error(path, _load_run_config) == "error":
                assert_user_error(_eval("-c", path.name), path.name)
                errors += 1
            assert not (tmp_path / "run").exists()
    assert errors > 150


def test_plugin_option_values_are_bounded_too():
    with pytest.raises(PluginError, match=r"option 'x'.*not valid YAML"):
        parse_spec("parrot:x=[oops")
    with pytest.raises(PluginError, match="nested more than 32"):
        parse_spec("parrot:x=" + "[" * 5000)
    assert parse_spec("parrot:speed=2,voice=piper:joe").options == {"speed": 2, "voice": "piper:joe"}
