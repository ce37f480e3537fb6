"""The suites' loaders and scorers without running a system: rules on hand-written replies with
known answers, the judge scorers against a real HTTP server on 127.0.0.1, the headline figures,
and bad datasets (each error names the file, the row and the column)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import pytest
from click.testing import CliRunner

import suite_fixtures as fx
from conftest import assert_user_error
from fake_openai_server import FakeOpenAIServer
from ivbench import registry
from ivbench.cli import main
from ivbench.errors import ConfigError, MissingDependency, ModelFileError, TaskFileError
from ivbench.judge import JudgeSettings
from ivbench.metrics.base import MetricResult, ScoreItem, ScoringContext
from ivbench.suites import authors, catalog, rules
from ivbench.suites.metrics import BigBenchAudio, UroBench, VoiceBench, parse_gpt_score, parse_uro_score
from ivbench.scoring.summary import score_frame, summarize_scores
from ivbench.types import TurnRecord

KEY_ENV = "IVBENCH_SUITES_TEST_KEY"


def task(spec: str) -> Any:
    return registry.create("tasks", registry.parse_spec(spec))


@pytest.fixture(scope="module")
def vb(tmp_path_factory) -> Path:
    return fx.voicebench(tmp_path_factory.mktemp("vb"))


# -- rules on hand-written replies, with the stand-in checkout's made-up rules --------------------


@pytest.fixture(scope="module")
def vb_text() -> authors.VoiceBenchText:
    return authors.load_voicebench(fx.VOICEBENCH_CODE)


@pytest.mark.parametrize("reply, expected", [
    ("My pick is B, the whale.", "B"), ("b) a whale", "B"), ("It goes with (c) here", "C"), ("**D**. Eel", None),
    ("d", "D"), ("<1>a. shark", "A"), ("A whale, I think.", None), ("I think it is the whale", None),
    ("Surely the very first one", "A"), ("The last one.", "D"), ("my pick is d, or the very first one", "D"),
])
def test_mcq_extraction(reply, expected, vb_text):
    assert rules.extract_choice(reply, vb_text) == expected
    # what the stand-in's own code computes from the same rules
    assert fx.authors_module("VoiceBench/src/evaluator/mcq.py").MCQEvaluator().extract_answer(reply) == expected


BBH_METHODS = {"sports_understanding": "sports", "hyperbaton": "hyperbaton", "navigate": "navigate",
               "web_of_lies": "lies"}


@pytest.mark.parametrize("reply, subtask, expected", [
    ("First.", "hyperbaton", 0),  # equals, after bbh.py's normalisation
    ("I pick (B).", "hyperbaton", 1),
    ("Sentence two reads right", "hyperbaton", 1),  # a regex rule
    ("A: the first", "hyperbaton", 0),  # ":" becomes a space, then startswith "a "
    ("Verdict: no", "hyperbaton", None),  # hyperbaton does not try the yes/no rules first
    ("Hard to say", "hyperbaton", None),
    ("Verdict: yes, though it sounds implausible", "sports_understanding", 1),  # the yes/no rules first
    ("Implausible.", "sports_understanding", 0),
    ("Plausible, not implausible", "sports_understanding", 1),  # the rules' order decides
    ("We end up back home!", "navigate", 1),
    ("So Ka-ren is honest.", "web_of_lies", 1),  # "-" and "." become spaces
    ("Bob is lying", "web_of_lies", 0),
])
def test_bbh_extraction(reply, subtask, expected, vb_text):
    assert rules.extract_bbh(reply, subtask, vb_text) == expected
    method = getattr(fx.authors_module("VoiceBench/src/evaluator/bbh.py").BBHEvaluator(),
                     f"extract_answer_{BBH_METHODS[subtask]}")
    if expected is not None:  # where the stand-in guesses at random, ivbench has no answer
        assert method(rules.normalise_bbh(reply)) == expected


@pytest.mark.parametrize("reply, refused", [
    ("NO WAY, not doing that.", True), ("", True), ("   ", True), ("这个不行", True), ("Sure! Step one is…", False),
    # Two strings without a comma between them are one phrase, in Python and so here.
    ("I refuse to help", False), ("I refuseto help you", True),
])
def test_advbench_refusal_rule(reply, refused, vb_text):
    assert rules.is_refusal(reply, vb_text) is refused
    assert fx.authors_module("VoiceBench/src/evaluator/harm.py").HarmEvaluator().evaluate_single(reply) is refused


def test_gpt_and_uro_score_parsing():
    assert parse_gpt_score("4") == 4.0 and parse_gpt_score("Rating: [[5]]") == 5.0
    assert parse_gpt_score("four") is None
    assert parse_uro_score(" 3\n") == 3.0 and parse_uro_score("3.5") is None and parse_uro_score("Score: 3") is None


def test_ifeval_agrees_exactly_with_lm_eval():
    """The metric's four figures equal lm-eval's own IFEval aggregation on the same responses."""
    from lm_eval.tasks.ifeval import utils

    docs = [
        {"key": 1, "prompt": "Write without commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"key": 2, "prompt": "Answer in at least 5 words and end with 'Bye'.",
         "instruction_id_list": ["length_constraints:number_words", "startend:end_checker"],
         "kwargs": [{"num_words": 5, "relation": "at least"}, {"end_phrase": "Bye"}]},
        {"key": 3, "prompt": "Reply in lowercase.", "instruction_id_list": ["change_case:english_lowercase"],
         "kwargs": [{}]},
    ]
    replies = ["Hello there, friend.", "*This reply has many words in it.*\nBye", "all lower case here"]
    expected = [utils.process_results(doc, [reply]) for doc, reply in zip(docs, replies)]
    metric = VoiceBench()
    results = [metric._ifeval(doc["prompt"], reply, {"instruction_id_list": doc["instruction_id_list"],
                                                    "kwargs": doc["kwargs"]}) for doc, reply in zip(docs, replies)]
    for want, got in zip(expected, results):
        assert got.values["prompt_strict"] == float(want["prompt_level_strict_acc"])
        assert got.values["prompt_loose"] == float(want["prompt_level_loose_acc"])
        assert got.values["inst_strict"] == float(sum(want["inst_level_strict_acc"]))
        assert got.values["inst_loose"] == float(sum(want["inst_level_loose_acc"]))
    inst_strict = utils.agg_inst_level_acc([w["inst_level_strict_acc"] for w in expected])
    assert sum(r.values["inst_strict"] for r in results) / sum(r.values["instructions"] for r in results) == inst_strict


# -- records and the judge -------------------------------------------------------------------------


def record(meta: dict[str, Any], reply: Optional[str], user_text: str = "What is it?", mode: str = "s2t",
           reference: Optional[str] = None, dialogue: str = "d0", turn: int = 0, n_turns: int = 1) -> TurnRecord:
    ok = reply is not None
    return TurnRecord(system="sys", task="t", dialogue_id=dialogue, turn_index=turn, n_turns=n_turns, mode=mode,
                      attempt=1, status="ok" if ok else "failed", user_text=user_text, user_audio=None,
                      reference=reference, reply_text=reply, reply_audio=None, reply_sample_rate=None,
                      reply_duration_s=None, first_audio_ms=None, first_text_ms=None, end_ms=None, rtf=None,
                      events=[], stages={}, error=None if ok else {"message": "boom"},
                      category=meta.get("subset") or meta.get("dataset") or meta.get("category"), metadata=meta)


def items(*records: TurnRecord, tmp_path: Path = Path(".")) -> list[ScoreItem]:
    return [ScoreItem(record=r, run_dir=tmp_path) for r in records]


@pytest.fixture()
def judge(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, "test-key")

    def make(reply: Any) -> tuple[FakeOpenAIServer, ScoringContext]:
        server = FakeOpenAIServer(reply=reply).__enter__()
        servers.append(server)
        settings = JudgeSettings(model="fake", base_url=server.url, api_key_env=KEY_ENV, cache_dir=tmp_path,
                                 backoff_base=0.0)
        return server, ScoringContext(judge=settings)

    servers: list[FakeOpenAIServer] = []
    yield make
    for s in servers:
        s.__exit__(None, None, None)


def scored(metric: Any, targets: list[Any], context: ScoringContext) -> list[MetricResult]:
    metric.load(context)
    return metric.evaluate(targets)


VB_OPEN = {"suite": "voicebench", "subset": "commoneval", "scorer": "open"}
VB_QA = {"suite": "voicebench", "subset": "sd-qa", "scorer": "qa", "reference": "Paris"}


def test_voicebench_open_and_qa_judges(judge):
    # the judge's reply to each answer (requests run concurrently, so it goes by content)
    replies = {"It is Paris.": "4", "Paris.": "[[5]]", "Hm.": "great answer",
               "Paris": "Yes", "Lyon": "no", "Paris, France": "Yes"}

    def reply(request: dict[str, Any]) -> str:
        text = request["messages"][-1]["content"]
        answer = text.split("[Replied] ")[1] if "[Replied] " in text else text.split("Replied: ")[1]
        return replies[answer.split("\n")[0].strip()]

    server, context = judge(reply)
    targets = items(record(VB_OPEN, "It is Paris.", dialogue="a"), record(VB_OPEN, "Paris.", dialogue="b"),
                    record(VB_OPEN, "Hm.", dialogue="c"), record(VB_QA, "Paris", dialogue="d"),
                    record(VB_QA, "Lyon", dialogue="e"), record(VB_QA, "Paris, France", dialogue="f"))
    metric = VoiceBench(code=str(fx.VOICEBENCH_CODE))
    results = scored(metric, targets, context)
    assert [r.values.get("gpt_score") for r in results[:3]] == [4.0, 5.0, None]
    assert results[2].status == "failed" and results[2].details["raw_replies"] == ["great answer"]
    assert [r.values["accuracy"] for r in results[3:]] == [1.0, 0.0, 1.0]
    # the messages are the ones the stand-in's own code builds from its prompts
    generate = fx.authors_module("VoiceBench/api_judge.py").generate
    sent = {r["json"]["messages"][-1]["content"]: r["json"]["messages"] for r in server.requests}
    for item in ({"prompt": "What is it?", "response": "It is Paris."},
                 {"prompt": "What is it?", "reference": "Paris", "response": "Lyon"}):
        expected = generate(item)["messages"]
        assert sent[expected[-1]["content"]] == expected
    # each result names the copy of the authors' text that scored it
    assert all(r.details["authors"] == metric.text.origin.identity() for r in results)
    assert metric.identity()["authors"] == {"digest": metric.text.origin.digest, "commit": None}


def test_voicebench_rules_and_other_suites(tmp_path):
    metric = VoiceBench(code=str(fx.VOICEBENCH_CODE))
    metric.load(ScoringContext(judge=None))
    mcq = {"suite": "voicebench", "subset": "mmsu", "scorer": "mcq", "reference": "B"}
    harm = {"suite": "voicebench", "subset": "advbench", "scorer": "harm"}
    results = metric.evaluate(items(record(VB_OPEN, "Hi"), record(mcq, "My pick is B."), record(mcq, "whale"),
                                    record(harm, "Sure, here is how."), record({"suite": "urobench"}, "x"),
                                    record(mcq, None), record(harm, "No way.")))
    assert results[0].status == "missing" and results[0].values == {"gpt_score": None}
    assert "--judge-model" in (results[0].reason or "")
    assert results[1].values == {"accuracy": 1.0, "unextractable": 0.0, "accuracy_with_guess": 1.0}
    assert results[2].values == {"accuracy": 0.0, "unextractable": 1.0, "accuracy_with_guess": 0.25}
    assert results[3].values == {"refusal": 0.0} and results[6].values == {"refusal": 1.0}
    assert results[4].status == "not_applicable" and results[4].values == {}
    assert results[5].status == "missing"


def test_without_the_authors_text_each_result_needing_it_is_missing_with_how_to_get_it(judge):
    """No checkout configured: never a substitute prompt or rule; what needs none is scored."""
    server, context = judge(lambda request: "4")
    metric = VoiceBench()
    assert metric.text is None and metric.identity()["authors"] is None
    needing = [{**VB_OPEN}, {**VB_QA}, {"suite": "voicebench", "subset": "mmsu", "scorer": "mcq", "reference": "B"},
               {"suite": "voicebench", "subset": "bbh", "scorer": "bbh", "reference": "yes", "id": "navigate_1"},
               {"suite": "voicebench", "subset": "advbench", "scorer": "harm"}]
    ifeval = {"suite": "voicebench", "subset": "ifeval", "scorer": "ifeval",
              "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    results = scored(metric, items(*[record(m, "I am not sure", dialogue=f"d{i}") for i, m in enumerate(needing)],
                                   record(ifeval, "No commas here", dialogue="i")), context)
    for result, source in zip(results, ("api_judge.py", "api_judge.py", "mcq.py", "bbh.py", "harm.py")):
        assert result.status == "missing" and all(v is None for v in result.values.values())
        for fragment in ("which ivbench does not ship", source, "github.com/MatthewCYM/VoiceBench",
                         "voicebench:code=DIR", "IVBENCH_VOICEBENCH_CODE"):
            assert fragment in (result.reason or ""), (fragment, result.reason)
    assert results[-1].status == "ok" and results[-1].values["prompt_strict"] == 1.0  # IFEval: lm-eval's
    uro = UroBench()
    from ivbench.metrics.base import DialogueItem

    base = {"suite": "urobench", "track": "basic", "language": "en", "ability": "oral"}
    uro_results = scored(uro, [DialogueItem(turns=items(record({**base, "dataset": "AlpacaEval", "scorer": "open"},
                                                               "Tea.", dialogue="o"))),
                               DialogueItem(turns=items(record({**base, "dataset": "Repeat", "scorer": "wer"},
                                                               "Hello there", reference="Hello there",
                                                               dialogue="r")))], context)
    assert uro_results[0].status == "missing"
    assert "urobench:code=DIR" in (uro_results[0].reason or "") and "IVBENCH_UROBENCH_CODE" in uro_results[0].reason
    assert uro_results[1].values == {"score": 100.0, "wer": 0.0}  # Repeat's WER rule needs no text
    bba = {"suite": "big_bench_audio", "scorer": "bba", "category": "navigate", "official_answer": "Yes",
           "id": "1", "has_text": True}
    (bba_result,) = scored(BigBenchAudio(), items(record(bba, "Yes")), context)
    assert bba_result.status == "missing" and "big_bench_audio:prompt_file=FILE" in (bba_result.reason or "")
    assert "IVBENCH_BIG_BENCH_AUDIO_PROMPT" in bba_result.reason
    assert server.requests == []  # nothing was sent to the judge without the authors' prompt


def test_urobench_modes(judge):
    def reply(request: dict[str, Any]) -> str:
        text = request["messages"][-1]["content"]
        return "Yes" if "Say Yes or No." in text else "4"

    server, context = judge(reply)
    base = {"suite": "urobench", "track": "basic", "language": "en"}
    repeat = {**base, "dataset": "Repeat", "scorer": "wer", "ability": "understanding"}
    qa = {**base, "dataset": "Gsm8kEval", "scorer": "qa", "ability": "reasoning"}
    open_ = {**base, "dataset": "AlpacaEval", "scorer": "open", "ability": "oral"}
    from ivbench.metrics.base import DialogueItem

    def dialogue(meta: dict[str, Any], reply: str, reference: Optional[str] = None, name: str = "d") -> DialogueItem:
        return DialogueItem(turns=items(record(meta, reply, reference=reference, dialogue=name)))

    multi = {**base, "track": "pro", "dataset": "MtBenchEval-en", "scorer": "multi", "ability": "reasoning"}
    conversation = DialogueItem(turns=items(
        record(multi, "Hi Anna", user_text="My name is Anna.", reference="Hello Anna", dialogue="m", n_turns=2),
        record(multi, "Anna", user_text="What is my name?", reference="Anna", dialogue="m", turn=1, n_turns=2)))
    metric = UroBench(code=str(fx.UROBENCH_CODE))
    results = scored(metric, [
        dialogue(repeat, "The sun is bright today", "The sun is bright today.", "r1"),
        dialogue(repeat, "Something else entirely here", "The sun is bright today.", "r2"),
        dialogue(qa, "Five", "5", "q"), dialogue(open_, "", name="e"), dialogue(open_, "Relax with tea.", name="o"),
        conversation], context)
    assert results[0].values == {"score": 100.0, "wer": 0.0}
    assert results[1].values["score"] == 0.0  # WER above 0.5 scores 0
    assert results[2].values == {"score": 100.0}
    assert results[3].values == {"score": 0.0}  # an empty answer scores 0 without a judgement
    assert results[4].values == {"score": 80.0}
    assert results[5].values == {"score": 80.0} and results[5].details["rounds"] == 2
    assert "authors" not in results[0].details and results[4].details["authors"] == metric.text.origin.identity()
    sent = [r["json"]["messages"] for r in server.requests]
    assert len(sent) == 3  # the empty answer and the Repeat set asked nothing
    get_prompt = fx.authors_module("URO-Bench/metrics/mark_gpt.py").get_prompt
    expected = get_prompt("multi", {"round": 2, "question1": "My name is Anna.", "answer1": "Hi Anna",
                                    "reference1": "Hello Anna", "question2": "What is my name?", "answer2": "Anna",
                                    "reference2": "Anna"})
    assert [{"role": "system", "content": "You rate replies with care."},
            {"role": "user", "content": expected}] in sent


def test_big_bench_audio_verdicts(judge):
    verdicts = {"Yes": "CORRECT", "No": "INCORRECT", "Maybe": "Not sure"}
    server, context = judge(lambda request: verdicts[request["messages"][-1]["content"].split(
        "Candidate: ")[1].split("\n")[0]])
    meta = {"suite": "big_bench_audio", "scorer": "bba", "category": "navigate", "official_answer": "Yes",
            "id": "1", "has_text": True}
    results = scored(BigBenchAudio(prompt_file=str(fx.BBA_PROMPT)),
                     items(record(meta, "Yes", dialogue="a"), record(meta, "No", dialogue="b"),
                           record(meta, "Maybe", dialogue="c")), context)
    assert [r.values.get("correct") for r in results] == [1.0, 0.0, None]
    assert results[2].status == "failed"
    first = server.requests[0]["json"]["messages"]
    assert len(first) == 1 and first[0]["role"] == "user"  # the prompt has no system message
    assert "Question: What is it? \n\nEND\nOfficial: Yes\n" in first[0]["content"]


# -- headlines -------------------------------------------------------------------------------------


def test_voicebench_overall_is_the_leaderboard_formula():
    """Whisper-v3-large+GPT-4o's nine figures in VoiceBench's README give its overall, 87.80."""
    figures = {"alpacaeval_full": 4.80, "commoneval": 4.47, "wildvoice": 4.62, "sd-qa": 75.77, "mmsu": 81.69,
               "openbookqa": 92.97, "bbh": 87.20, "ifeval": 76.51, "advbench": 98.27}
    rows, categories = [], {}
    from ivbench.store.scores import ScoreRow

    for subset, figure in figures.items():
        for k in range(2):  # two dialogues each, the same value: the figure, with a zero-width CI
            dialogue = f"{subset}-{k}"
            categories[dialogue] = subset
            scorer = catalog.VOICEBENCH[subset].scorer
            if scorer == "open":
                values = {"gpt_score": figure}
            elif scorer == "ifeval":
                values = {"prompt_strict": figure / 100, "prompt_loose": figure / 100, "inst_strict": figure / 100,
                          "inst_loose": figure / 100, "instructions": 1.0}
            elif scorer == "harm":
                values = {"refusal": figure / 100}
            else:
                values = {"accuracy": figure / 100}
            rows.append(ScoreRow("voicebench", "s", dialogue, 0, "s2t", MetricResult(values)))
    summary = summarize_scores(score_frame(rows), {"voicebench": VoiceBench()}, categories)
    overall = summary[(summary["metric"] == "voicebench") & (summary["field"] == "overall")].iloc[0]
    assert overall["value"] == pytest.approx(87.80, abs=0.005)
    assert overall["ci_low"] == pytest.approx(overall["value"])
    assert overall["ci_high"] == pytest.approx(overall["value"])
    mmsu = summary[summary["field"] == "mmsu"].iloc[0]
    assert mmsu["value"] == pytest.approx(81.69)
    # one subset missing: no overall, never a mean of the others
    partial = [r for r in rows if not r.dialogue_id.startswith("advbench")]
    summary = summarize_scores(score_frame(partial), {"voicebench": VoiceBench()}, categories)
    overall = summary[summary["field"] == "overall"].iloc[0]
    assert pd.isna(overall["value"]) and overall["missing"] == 1


# -- loading: layouts, laziness, errors ------------------------------------------------------------


def test_every_voicebench_subset_loads_with_its_facts(vb):
    for subset, rows in fx.VOICEBENCH_ROWS.items():
        t = task(f"voicebench:subset={subset},path={vb}")
        dialogues = t.dialogues[:]
        assert [d.turns[0].text for d in dialogues] == [r["prompt"] for r in rows]
        meta = dialogues[0].metadata
        assert meta["subset"] == subset and meta["scorer"] == catalog.VOICEBENCH[subset].scorer
        assert t.options["scorers"] == ["voicebench"] and t.licence == "Apache-2.0"
    ifeval = task(f"voicebench:subset=ifeval,path={vb}").dialogues[1].metadata
    assert ifeval["instruction_id_list"] == ["length_constraints:number_words"]
    assert ifeval["kwargs"] == [{"num_words": 5, "relation": "at least"}]


def test_audio_is_decoded_lazily_to_16k_wav(vb, tmp_path):
    import soundfile

    from ivbench.cache import default_cache_dir

    t = task(f"voicebench:subset=leaderboard,path={vb}")
    assert len(t.dialogues) == 18
    cache = default_cache_dir() / "suites"
    before = set(cache.rglob("*.wav")) if cache.exists() else set()
    first = t.dialogues[:1][0]
    made = set(cache.rglob("*.wav")) - before
    assert len(made) <= 1  # only the dialogue taken
    info = soundfile.info(first.turns[0].audio_path)
    assert info.samplerate == 16000 and info.channels == 1


def test_save_to_disk_layout_gives_the_same_dialogues(vb, tmp_path):
    disk = fx.voicebench_disk(tmp_path / "disk", "openbookqa")
    a = task(f"voicebench:subset=openbookqa,path={vb}").dialogues[:]
    b = task(f"voicebench:subset=openbookqa,path={disk}").dialogues[:]
    import soundfile

    assert [(d.id, d.turns[0].text, d.metadata) for d in a] == [(d.id, d.turns[0].text, d.metadata) for d in b]
    assert (soundfile.read(a[0].turns[0].audio_path)[0] == soundfile.read(b[0].turns[0].audio_path)[0]).all()


def test_urobench_and_bba_layouts(tmp_path):
    uro = fx.urobench(tmp_path / "uro")
    t = task(f"urobench:subset=StoralEval+MtBenchEval-en,path={uro}")
    dialogues = t.dialogues[:]
    assert dialogues[0].turns[0].reference == "Sharing is caring / Kindness matters"
    assert [len(d.turns) for d in dialogues] == [1, 2, 2] and dialogues[1].id == "MtBenchEval-en-7"
    # a row without recorded audio is spoken by the run's voice: no audio path
    extra = uro / "basic" / "MLC"
    extra.mkdir(parents=True)
    (extra / "test.jsonl").write_text(json.dumps({"source_text": "What is one plus one?", "target_text": "2"}) + "\n")
    (spoken,) = task(f"urobench:subset=MLC,path={uro}").dialogues[:]
    assert spoken.turns[0].audio_path is None and spoken.metadata["scorer"] == "qa"
    bba = fx.big_bench_audio(tmp_path / "bba")
    t = task(f"big-bench-audio:path={bba},category=navigate")
    (d,) = t.dialogues[:]
    assert d.metadata["official_answer"] == "Yes" and d.category == "navigate" and Path(d.turns[0].audio_path).is_file()


def test_a_relative_dataset_path_as_the_readme_gives_it(tmp_path, monkeypatch):
    """The README's commands name each dataset folder relative to where they run
    (`path=URO-Bench-data`); URO-Bench's wavs are files beside test.jsonl, read from there."""
    import soundfile

    fx.urobench(tmp_path / "URO-Bench-data")
    fx.big_bench_audio(tmp_path / "big_bench_audio")
    monkeypatch.chdir(tmp_path)
    for spec in ("urobench:subset=AlpacaEval,path=URO-Bench-data", "big-bench-audio:path=big_bench_audio"):
        (first,) = task(spec).dialogues[:1]
        assert soundfile.info(first.turns[0].audio_path).samplerate == 16000, spec


def test_without_pyarrow_a_parquet_dataset_names_the_extra(vb, monkeypatch):
    """After `make demo` (no suites extra) this was a ModuleNotFoundError traceback called a bug."""
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # what an import finds when it is not installed
    with pytest.raises(MissingDependency, match=r"commoneval.*parquet files needs pyarrow: pip install "
                                                r"'ivbench\[suites\]'"):
        task(f"voicebench:subset=commoneval,path={vb}").dialogues[:1]


def bad_copy(vb: Path, tmp_path: Path, subset: str, mutate: Any) -> Path:
    """A copy of the fixture whose `subset` parquet went through `mutate` (a pandas frame edit)."""
    root = tmp_path / "bad"
    shutil.copytree(vb / subset, root / subset)
    path = next((root / subset).glob("*.parquet"))
    frame = pd.read_parquet(path)
    mutate(frame)
    frame.to_parquet(path)
    return root


def test_bad_dataset_errors_name_file_row_and_column(vb, tmp_path):
    root = bad_copy(vb, tmp_path, "mmsu", lambda f: f.__setitem__("reference", ["B", "E"]))
    with pytest.raises(TaskFileError, match=r"biology-00000-of-00001\.parquet row 1: column 'reference': 'E'"):
        task(f"voicebench:subset=mmsu,path={root}")
    root = bad_copy(vb, tmp_path / "2", "sd-qa", lambda f: f.pop("reference"))
    with pytest.raises(TaskFileError, match=r"usa-00000-of-00001\.parquet: no column 'reference'; it has audio"):
        task(f"voicebench:subset=sd-qa,path={root}")
    root = bad_copy(vb, tmp_path / "3", "commoneval", lambda f: f.__setitem__("prompt", ["ok", ""]))
    with pytest.raises(TaskFileError, match=r"row 1: column 'prompt': empty"):
        task(f"voicebench:subset=commoneval,path={root}")

    def garble(frame: pd.DataFrame) -> None:
        frame.at[1, "audio"] = {"bytes": b"not audio at all", "path": None}

    root = bad_copy(vb, tmp_path / "4", "wildvoice", garble)
    t = task(f"voicebench:subset=wildvoice,path={root}")
    t.dialogues[:1]  # the good row decodes
    with pytest.raises(TaskFileError, match=r"test-00000-of-00001\.parquet row 1: column 'audio': cannot be decoded"):
        t.dialogues[1:2]


def test_bad_dataset_is_one_line_at_the_command_line(vb, tmp_path):
    root = bad_copy(vb, tmp_path, "bbh", lambda f: f.__setitem__("id", ["sports_understanding_1", "chess_2"]))
    result = CliRunner().invoke(main, ["eval", "--task", f"voicebench:subset=bbh,path={root}", "--out",
                                       str(tmp_path / "run"), "--no-progress"])
    assert_user_error(result, "row 1: column 'id'", "chess_2")


def test_wrong_options_and_missing_folders(vb, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown subset 'mmlu'"):
        task(f"voicebench:subset=mmlu,path={vb}")
    with pytest.raises(ConfigError, match="give subset=NAME"):
        task(f"voicebench:path={vb}")
    with pytest.raises(TaskFileError, match="no split 'kenya'.*splits there: usa"):
        task(f"voicebench:subset=sd-qa,split=kenya,path={vb}")
    with pytest.raises(TaskFileError, match="no folder 'advbench'"):
        task(f"voicebench:subset=advbench,path={tmp_path}")
    uro = tmp_path / "uro"
    (uro / "basic" / "MLC").mkdir(parents=True)
    (uro / "basic" / "MLC" / "test.jsonl").write_text('{"source_wav": "a.wav", "source_text": "hi"}\n{oops\n')
    with pytest.raises(TaskFileError, match=r"MLC/test\.jsonl:2: not valid JSON"):
        task(f"urobench:subset=MLC,path={uro}")
    # offline, a hub id not in the datasets cache is the user's to fix, with what to do
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(TaskFileError, match="download it once where there is a network"):
        task("voicebench:subset=commoneval")


def test_list_tasks_shows_source_licence_and_scorer():
    result = CliRunner().invoke(main, ["list", "tasks"])
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "hlt-lab/voicebench" in lines["voicebench"] and "Apache-2.0" in lines["voicebench"]
    assert "overall" in lines["voicebench"] and "IFEval" in lines["voicebench"]
    assert "MIT" in lines["urobench"] and "Honggao/URO-Bench" in lines["urobench"]
    assert "MIT" in lines["big-bench-audio"] and "LLM evaluator" in lines["big-bench-audio"]


def test_records_carry_metadata_as_json(tmp_path):
    r = record(VB_QA, "Paris")
    assert TurnRecord.from_json(json.loads(json.dumps(r.to_json()))).metadata == VB_QA
    # a run written before records had metadata reads back with none
    old = {k: v for k, v in r.to_json().items() if k != "metadata"}
    assert TurnRecord.from_json(old).metadata == {}


@pytest.mark.parametrize("mode", sorted(UroBench.SINGLE))
def test_every_urobench_judge_prompt_is_filled(mode):
    """Each single-round mode's prompt gets every placeholder it has from the record and its
    metadata: the messages are what the stand-in's own get_prompt and mark build."""
    from ivbench.metrics.base import DialogueItem
    from ivbench.suites.metrics import JudgeJob

    metric = UroBench(code=str(fx.UROBENCH_CODE))
    metric._client = object()  # a judge is configured; outcome() only builds the request
    meta = {"suite": "urobench", "dataset": "X", "scorer": mode, "language": "en", "emotion": "sad",
            "style": "pirate", "requirement": "French"}
    job = metric.outcome(DialogueItem(turns=items(record(meta, "An answer.", reference="A reference."))))
    assert isinstance(job, JudgeJob)
    values = {"question": "What is it?", "answer": "An answer.", "reference": "A reference.", "emotion": "sad",
              "style": "pirate", "language": "French"}
    get_prompt = fx.authors_module("URO-Bench/metrics/mark_gpt.py").get_prompt
    assert job.messages == [{"role": "system", "content": "You rate replies with care."},
                            {"role": "user", "content": get_prompt(mode, values)}]
    assert "{" not in job.messages[-1]["content"]


def test_ifeval_check_without_nltk_data_is_missing_with_what_to_do():
    """number_sentences needs NLTK's punkt_tab: without it the result is missing (never a fail)."""
    import nltk

    meta = {"instruction_id_list": ["length_constraints:number_sentences"],
            "kwargs": [{"num_sentences": 2, "relation": "at least"}]}
    result = VoiceBench._ifeval("Answer in two sentences.", "One. Two.", meta)
    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        assert result.status == "missing" and "nltk.downloader punkt_tab" in (result.reason or "")
        assert result.values["prompt_strict"] is None
    else:
        assert result.status == "ok" and result.values["prompt_strict"] == 1.0


# -- the authors' text: read from a checkout, never run --------------------------------------------


def test_loader_reads_the_checkout_layout():
    vb = authors.load_voicebench(fx.VOICEBENCH_CODE)
    assert vb.mcq_templates == ("my pick is [CHOICE]", "goes with ([CHOICE])")
    assert [(r.pattern, r.answer) for r in vb.mcq_fallbacks] == [("the very first one", "A"), ("the last one", "D")]
    assert vb.refusals == ("No way", "I refuseto help", "不行")
    assert {name: (m.yes_no_first, len(m.rules)) for name, m in vb.bbh.items()} == {
        "hyperbaton": (False, 5), "yn": (False, 2), "lies": (True, 2), "navigate": (True, 2), "sports": (True, 2)}
    assert [(r.kind, r.pattern, r.answer) for r in vb.bbh["hyperbaton"].rules][2:4] == [
        ("contains", "i pick (a)", 0), ("regex", "sentence (.+?) reads right", 1)]
    judge = fx.authors_module("VoiceBench/api_judge.py")
    assert vb.prompts["open"].user == judge.meta_prompt_open and vb.prompts["qa"].user == judge.meta_prompt_qa
    assert vb.prompts["qa"].system == "You grade answers fairly."
    uro = authors.load_urobench(fx.UROBENCH_CODE)
    assert set(uro.prompts) == set(authors.UROBENCH_PROMPTS)
    assert uro.prompts["open"].user.startswith("Rate the reply from 1 to 5.\n    Q: {question}")  # .strip() applied
    bba = authors.load_big_bench_audio(fx.BBA_PROMPT)  # the fenced block of a markdown page
    assert bba.prompt.system == "" and bba.prompt.user.startswith("Is the CANDIDATE right?\n")
    assert "{question} \n\nEND\n" in bba.prompt.user and bba.prompt.user.endswith("INCORRECT.")


def test_loader_never_runs_the_checkout(tmp_path):
    code = fx.authors_copy(tmp_path, "VoiceBench")
    marker = tmp_path / "ran"
    for rel in authors.VOICEBENCH_FILES.values():
        with open(code / rel, "a", encoding="utf-8") as f:
            f.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    authors.load_voicebench(code)
    assert not marker.exists()


def test_identity_is_a_digest_of_the_files_and_the_commit(tmp_path):
    import subprocess

    code = fx.authors_copy(tmp_path, "VoiceBench")
    same = authors.load_voicebench(code).origin
    assert same.identity() == authors.load_voicebench(fx.VOICEBENCH_CODE).origin.identity()  # the path is not in it
    assert same.commit is None  # not a git checkout
    git = ["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert authors.load_voicebench(code).origin.commit == head
    subprocess.run([*git, "pack-refs", "--all"], check=True)  # the branch's commit now in packed-refs only
    assert authors.load_voicebench(code).origin.commit == head
    harm = code / "src" / "evaluator" / "harm.py"
    harm.write_text(harm.read_text(encoding="utf-8").replace('"No way"', '"Not ever"'), encoding="utf-8")
    changed = VoiceBench(code=str(code))
    assert changed.text.refusals[0] == "Not ever"
    assert changed.identity()["authors"]["digest"] != same.digest  # a new cache key: never the old results


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.parametrize("rel, old, new, fragments", [
    ("api_judge.py", "meta_prompt_qa =", "qa_prompt =", ("api_judge.py", "meta_prompt_qa: not assigned")),
    ("api_judge.py", "[Replied] {response}", "[Replied]", ("api_judge.py", "meta_prompt_open", "{response}")),
    ("api_judge.py", '"content": "You grade answers fairly."', '"content": SYSTEM',
     ("api_judge.py:", "system message", "not a string literal")),
    ("src/evaluator/mcq.py", "class MCQEvaluator", "class MultipleChoice",
     ("mcq.py", "MCQEvaluator.extract_answer", "no class MCQEvaluator")),
    ("src/evaluator/mcq.py", '"my pick is [CHOICE]",', 'PICK,', ("mcq.py", "[CHOICE]")),
    ("src/evaluator/harm.py", '"No way",', "WAYS,", ("harm.py:", "self.refusal_string", "not a list of string")),
    ("src/evaluator/bbh.py", "def extract_answer_navigate", "def navigate",
     ("bbh.py", "BBHEvaluator.extract_answer_navigate", "not defined")),
    ("src/evaluator/bbh.py", 'elif "far away" in response:', "elif len(response) > 40:",
     ("bbh.py:", "extract_answer_navigate", "len(response) > 40")),
    ("src/evaluator/bbh.py", '"i pick (a)" in response:\n            return 0', '"i pick (a)" in response:\n'
     '            return "no"', ("bbh.py", "extract_answer_hyperbaton", "returns 'no', not 0 or 1")),
    ("src/evaluator/bbh.py", "class BBHEvaluator:", "class BBHEvaluator(:", ("bbh.py:", "cannot be parsed as Python")),
])
def test_an_incompatible_checkout_names_the_file_and_the_name(tmp_path, rel, old, new, fragments):
    code = fx.authors_copy(tmp_path, "VoiceBench")
    _replace(code / rel, old, new)
    with pytest.raises(ModelFileError) as caught:
        VoiceBench(code=str(code))
    problem = "" if "cannot be parsed" in fragments[-1] else "another version"  # a file of another version
    for fragment in (*fragments, problem):
        assert fragment in str(caught.value), (fragment, str(caught.value))


def test_incompatible_urobench_and_bba_copies(tmp_path):
    code = fx.authors_copy(tmp_path, "URO-Bench")
    _replace(code / "metrics" / "mark_gpt.py", "    prompt_ml =", "    prompt_lang =")
    with pytest.raises(ModelFileError, match=r"mark_gpt\.py: get_prompt: prompt_ml: not assigned"):
        UroBench(code=str(code))
    (code / "metrics" / "mark_gpt.py").unlink()
    with pytest.raises(ModelFileError, match=r"mark_gpt\.py: not found; URO-Bench .* has metrics/mark_gpt\.py"):
        UroBench(code=str(code))
    plain = tmp_path / "prompt.txt"  # a plain text file works as well as the page, "\n" escapes and all
    plain.write_text("Q {question} \\n\\nA {official_answer} / {candidate_answer}\n", encoding="utf-8")
    read = authors.load_big_bench_audio(plain).prompt.user
    assert read == "Q {question} \n\nA {official_answer} / {candidate_answer}"
    plain.write_text("Q {question} A {official_answer}\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"prompt\.txt: the prompt lacks the placeholder\(s\) {candidate_answer}"):
        BigBenchAudio(prompt_file=str(plain))


def test_where_the_copy_is_option_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(authors.VOICEBENCH_ENV, str(fx.VOICEBENCH_CODE))
    assert VoiceBench().text.origin.path == str(fx.VOICEBENCH_CODE)
    monkeypatch.setenv(authors.VOICEBENCH_ENV, str(tmp_path / "nowhere"))
    # what to give, as the README's `code=VoiceBench` before the clone said only "VoiceBench is not a folder"
    with pytest.raises(ConfigError, match=rf"IVBENCH_VOICEBENCH_CODE: {tmp_path}/nowhere is not a folder; give "
                                          r"the folder of a clone of github\.com/MatthewCYM/VoiceBench "
                                          r"\(README, 'Suites'\)$"):
        VoiceBench()
    assert VoiceBench(code=str(fx.VOICEBENCH_CODE)).text is not None  # the option wins over the environment
    with pytest.raises(ConfigError, match=r"urobench: code=.*mark_gpt\.py: .* is not a folder \(it is a file\)"):
        UroBench(code=str(fx.UROBENCH_CODE / "metrics" / "mark_gpt.py"))
    monkeypatch.setenv(authors.BBA_ENV, str(fx.BBA_PROMPT))
    assert BigBenchAudio().text.origin.path == str(fx.BBA_PROMPT)
    with pytest.raises(ConfigError, match=r"big_bench_audio: prompt_file=.* is not a file \(it is a folder\); give the "
                                          r"\"LLM Evaluator Prompt\" of huggingface\.co/blog/big-bench-audio-release"):
        BigBenchAudio(prompt_file=str(tmp_path))


def test_the_task_gives_its_copy_to_its_default_scorer(vb, tmp_path):
    from ivbench.scoring import default_metric_specs, plan_metrics

    t = task(f"voicebench:subset=mmsu,path={vb},code={fx.VOICEBENCH_CODE}")
    assert t.options["scorers"] == [f"voicebench:code={fx.VOICEBENCH_CODE}"]
    uro = fx.urobench(tmp_path / "uro")
    u = task(f"urobench:subset=Repeat,path={uro},code={fx.UROBENCH_CODE}")
    bba = fx.big_bench_audio(tmp_path / "bba")
    b = task(f"big-bench-audio:path={bba},prompt_file={fx.BBA_PROMPT}")
    for made, name in ((t, "voicebench"), (u, "urobench"), (b, "big_bench_audio")):
        specs = default_metric_specs({"task": {"options": made.options}})
        (metric,) = [m for _, m in plan_metrics([s for s in specs if s.ref == name]) if m.name == name]
        assert metric.text is not None and metric.text.origin.path.startswith(str(fx.AUTHORS))
    assert task(f"voicebench:subset=mmsu,path={vb}").options["scorers"] == ["voicebench"]
    # a wrong copy stops the run before any system runs, as one line
    broken = fx.authors_copy(tmp_path, "VoiceBench")
    (broken / "src" / "evaluator" / "harm.py").unlink()
    result = CliRunner().invoke(main, ["eval", "--task", f"voicebench:subset=mmsu,path={vb},code={broken}",
                                       "--out", str(tmp_path / "run"), "--no-progress"])
    assert_user_error(result, "harm.py: not found")
    assert not (tmp_path / "run" / "records.jsonl").exists()
