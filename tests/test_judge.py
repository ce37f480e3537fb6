"""The LLM judge, through the real `openai` client against a local fake endpoint.

Every test talks HTTP to tests/fake_openai_server.py on 127.0.0.1; nothing leaves the machine.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import pytest

from ivbench.judge import JudgeClient, JudgeConfigError, JudgeSettings
from ivbench.judge.prompts import Exchange, get_prompt
from ivbench.metrics.base import DialogueItem, MetricResult, ScoreItem, ScoringContext
from ivbench.metrics.judge import NO_JUDGE, DialogueJudge, JudgeScore
from ivbench.types import TurnRecord

from fake_openai_server import FakeOpenAIServer

KEY_ENV = "IVBENCH_TEST_JUDGE_KEY"
SECRET = "sk-test-do-not-leak-123"


# -- helpers -----------------------------------------------------------------------------

@pytest.fixture
def server():
    with FakeOpenAIServer(reply="The reply is fine.\nScore: 4") as s:
        yield s


@pytest.fixture
def settings(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)

    def make(**overrides: Any) -> JudgeSettings:
        values: dict[str, Any] = dict(model="fake-judge", base_url=server.url, api_key_env=KEY_ENV,
                                      timeout=5.0, backoff_base=0.01, backoff_max=0.05,
                                      cache_dir=tmp_path / "cache")
        values.update(overrides)
        return JudgeSettings(**values)

    return make


def record(mode: str = "s2s", turn_index: int = 0, *, dialogue_id: str = "d0", system: str = "sys",
           user_text: str = "script of the user turn", reply_text: Optional[str] = "the reply's own text",
           reference: Optional[str] = None, category: Optional[str] = None, status: str = "ok",
           reply_audio: Optional[str] = "", n_turns: int = 2) -> TurnRecord:
    speech_in, speech_out = mode[0] == "s", mode[-1] == "s"
    if reply_audio == "":
        reply_audio = f"audio/{dialogue_id}-{turn_index}.wav" if speech_out and status == "ok" else None
    return TurnRecord(
        system=system, task="t", dialogue_id=dialogue_id, turn_index=turn_index, n_turns=n_turns,
        mode=mode, attempt=0, status=status, user_text=user_text,
        user_audio=f"audio/{dialogue_id}-{turn_index}-user.wav" if speech_in else None,
        reference=reference, reply_text=reply_text if status == "ok" else None, reply_audio=reply_audio,
        reply_sample_rate=16000 if reply_audio else None, reply_duration_s=1.0 if reply_audio else None,
        first_audio_ms=None, first_text_ms=None, end_ms=None, rtf=None, events=[], stages={},
        error=None if status == "ok" else {"type": "RuntimeError", "message": "boom"}, category=category)


def item(tmp_path: Path, rec: TurnRecord, transcript: Optional[str] = None,
         user_transcript: Optional[str] = None) -> ScoreItem:
    return ScoreItem(record=rec, run_dir=tmp_path, transcript=transcript, user_transcript=user_transcript)


def s2s_item(tmp_path: Path, i: int = 0, **kw: Any) -> ScoreItem:
    return item(tmp_path, record("s2s", dialogue_id=f"d{i}", **kw), transcript=f"spoken reply {i}",
                user_transcript=f"spoken question {i}")


def run(metric: Any, targets: list[Any], judge: Any) -> tuple[list[MetricResult], ScoringContext]:
    """What the scoring run does: load, precheck every target, then score the rest in a batch."""
    context = ScoringContext(judge=judge)
    metric.load(context)
    results: list[Optional[MetricResult]] = [None] * len(targets)
    pending = []
    for i, target in enumerate(targets):
        early = metric.precheck(target)
        if early is not None:
            results[i] = early
        else:
            pending.append(i)
    for i, result in zip(pending, metric.score([targets[i] for i in pending])):
        results[i] = result
    return [r for r in results if r is not None], context


def user_message(request: dict[str, Any]) -> str:
    return request["json"]["messages"][-1]["content"]


# -- retries, failures, parsing ------------------------------------------------------------

def test_retries_on_429_500_and_timeout_then_succeeds(server, settings, tmp_path):
    server.push({"status": 429, "headers": {"retry-after": "0"}}, {"status": 500},
                {"delay": 1.0}, {"content": "Good answer.\nScore: 5"})
    results, context = run(JudgeScore(), [s2s_item(tmp_path)], settings(timeout=0.4))
    assert len(server.requests) == 4
    assert results[0].status == "ok" and results[0].values == {"score": 5.0}
    stats = context.shared["judge_client"].stats
    assert (stats.http_requests, stats.retries, stats.errors) == (4, 3, 0)


def test_gives_up_after_the_retries_and_never_scores_zero(server, settings, tmp_path):
    server.push({"status": 503}, {"status": 503}, {"status": 503})
    results, context = run(JudgeScore(), [s2s_item(tmp_path)], settings(retries=2))
    assert len(server.requests) == 3
    result = results[0]
    assert result.status == "failed" and result.values == {"score": None}
    assert "HTTP 503" in result.reason and "after 2 retries" in result.reason
    assert context.shared["judge_client"].stats.errors == 1


def test_an_auth_error_is_not_retried_and_stops_the_judge(server, settings, tmp_path):
    server.push({"status": 401})
    results, _ = run(JudgeScore(), [s2s_item(tmp_path, 0), s2s_item(tmp_path, 1)], settings(concurrency=1))
    assert len(server.requests) == 1  # no retry, and the second item sends nothing
    assert [r.status for r in results] == ["failed", "failed"]
    assert all(r.values["score"] is None and "HTTP 401" in r.reason for r in results)


def test_an_unparseable_reply_is_a_recorded_parse_failure(server, settings, tmp_path):
    server.push({"content": "I would say it is pretty good overall."})
    results, _ = run(JudgeScore(), [s2s_item(tmp_path)], settings())
    result = results[0]
    assert result.status == "failed" and result.values == {"score": None}
    assert "unparseable" in result.reason
    assert result.details["raw_replies"] == ["I would say it is pretty good overall."]
    assert result.details["parse_status"] == "failed" and result.details["samples"] == [None]


def test_samples_average_the_parseable_ones_and_keep_every_raw_reply(server, settings, tmp_path):
    server.push({"contents": ["Score: 4", "no idea", "Score: 5"]})
    results, _ = run(JudgeScore(), [s2s_item(tmp_path)], settings(n=3, temperature=0.7))
    assert server.requests[0]["json"]["n"] == 3
    result = results[0]
    assert result.status == "ok" and result.values == {"score": 4.5}
    assert result.details["raw_replies"] == ["Score: 4", "no idea", "Score: 5"]
    assert result.details["parse_status"] == "partial" and result.details["n_parsed"] == 2
    assert "1 of 3" in result.reason


def test_an_endpoint_that_ignores_n_is_asked_again(server, settings, tmp_path):
    server.push({"n_choices": 1, "content": "Score: 2"}, {"n_choices": 1, "content": "Score: 3"},
                {"n_choices": 1, "content": "Score: 4"})
    results, _ = run(JudgeScore(), [s2s_item(tmp_path)], settings(n=3, temperature=1.0))
    assert [r["json"].get("n") for r in server.requests] == [3, 2, None]
    assert results[0].values == {"score": 3.0} and len(results[0].details["raw_replies"]) == 3


@pytest.mark.parametrize("name, reply, expected", [
    ("llama-omni", "Helpful and brief.\nScore: 4", {"score": 4.0}),
    ("llama-omni", "**Score:** 5", {"score": 5.0}),
    ("llama-omni", "Score: 3/5", {"score": 3.0}),
    ("llama-omni", "Score: 2\n...on reflection...\nScore: 3", {"score": 3.0}),
    ("llama-omni", "Score: 7", None),  # off the 1-5 scale
    ("llama-omni", "I'd give it a four.", None),
    ("llama-omni", "Rated on a score of 1 to 5 it is fine.", None),
    ("content-style", "Content: 4\nStyle: 2", {"score": 3.0, "content": 4.0, "style": 2.0}),
    ("content-style", "**Content score:** 5\n**Style score:** 4", {"score": 4.5, "content": 5.0, "style": 4.0}),
    ("content-style", "Content: 4", None),
    ("mt-bench", "Accurate.\nRating: [[8]]", {"score": 8.0}),
    ("mt-bench", 'The format is "[[rating]]". Rating: [[7.5]]', {"score": 7.5}),
    ("mt-bench", "Rating: [6]", {"score": 6.0}),
    ("mt-bench", "Rating: [[11]]", None),
    ("mt-bench", "Rating: 8", None),
])
def test_reply_parsing(name, reply, expected):
    assert get_prompt(name).parse(reply) == expected


# -- cache, tokens, cost ------------------------------------------------------------------

def test_a_second_scoring_run_reads_the_cache(server, settings, tmp_path):
    items = [s2s_item(tmp_path, i) for i in range(3)]
    first, _ = run(JudgeScore(), items, settings())
    assert len(server.requests) == 3
    # a new run: new metric, new client, same cache folder
    second, context = run(JudgeScore(), items, settings())
    assert len(server.requests) == 3
    assert [r.to_json() for r in second] == [r.to_json() for r in first]
    stats = context.shared["judge_client"].stats
    assert (stats.cache_hits, stats.http_requests, stats.prompt_tokens) == (3, 0, 0)
    # a different judge setting is a different request
    run(JudgeScore(), items[:1], settings(temperature=0.5))
    assert len(server.requests) == 4


def test_identical_prompts_in_a_batch_are_sent_once(server, settings, tmp_path):
    same = [item(tmp_path, record("s2s", system=name), transcript="hi", user_transcript="hello")
            for name in ("a", "b")]
    results, context = run(JudgeScore(), same, settings())
    assert len(server.requests) == 1
    assert results[0].to_json() == results[1].to_json()
    assert context.shared["judge_client"].stats.cache_hits == 1


def test_tokens_and_cost_are_summed_over_requests(server, settings, tmp_path):
    server.push({"content": "Score: 3", "usage": {"prompt_tokens": 1000, "completion_tokens": 200}},
                {"content": "Score: 4", "usage": {"prompt_tokens": 3000, "completion_tokens": 100}})
    judge = settings(concurrency=1, prices=(2.5, 10.0))
    results, context = run(JudgeScore(), [s2s_item(tmp_path, 0), s2s_item(tmp_path, 1)], judge)
    assert [r.details["usage"] for r in results] == [{"prompt_tokens": 1000, "completion_tokens": 200},
                                                     {"prompt_tokens": 3000, "completion_tokens": 100}]
    stats = context.shared["judge_client"].stats.to_json(judge)
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (4000, 300)
    assert stats["cost_usd"] == pytest.approx(4000 * 2.5e-6 + 300 * 10e-6)
    assert settings().cost(4000, 300) is None  # no prices, no cost


def test_requests_run_concurrently(server, settings, tmp_path):
    for _ in range(6):
        server.push({"delay": 0.3, "content": "Score: 4"})
    start = time.perf_counter()
    results, _ = run(JudgeScore(), [s2s_item(tmp_path, i) for i in range(6)], settings(concurrency=3))
    assert all(r.values == {"score": 4.0} for r in results)
    assert server.max_in_flight >= 2
    assert time.perf_counter() - start < 6 * 0.3


# -- configuration ------------------------------------------------------------------------

def test_no_judge_configured_is_missing_never_a_number(tmp_path):
    for metric, target in ((JudgeScore(), s2s_item(tmp_path)),
                           (DialogueJudge(), DialogueItem([s2s_item(tmp_path)])),
                           (JudgeScore(prompt="content-style"), s2s_item(tmp_path))):
        metric.load(ScoringContext(judge=None))
        for result in (metric.precheck(target), metric.score([target])[0]):
            assert result.status == "missing" and result.reason == NO_JUDGE
            assert set(result.values) == set(metric.fields) and all(v is None for v in result.values.values())
        assert metric.cache_inputs(target) is None


def test_the_key_comes_from_the_environment_only(server, settings, tmp_path, monkeypatch):
    judge = settings()
    results, _ = run(JudgeScore(), [s2s_item(tmp_path)], judge)
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    metric = JudgeScore()
    metric.load(ScoringContext(judge=judge))
    for blob in (judge.to_json(), judge.identity(), metric.identity(), results[0].to_json(),
                 repr(judge)):
        assert SECRET not in str(blob)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(JudgeConfigError, match=KEY_ENV):
        JudgeClient(JudgeSettings(model="gpt-4o", api_key_env=KEY_ENV))
    # a local endpoint with no key gets a placeholder
    assert JudgeSettings(model="m", base_url=server.url, api_key_env=KEY_ENV).api_key() == "EMPTY"


def test_identity_names_the_judge_and_the_prompt(settings):
    metric = JudgeScore(prompt="mt-bench")
    metric.load(ScoringContext(judge=settings(n=2, temperature=0.3)))
    identity = metric.identity()
    assert identity["prompt"] == "mt-bench" and identity["prompt_version"] == get_prompt("mt-bench").version
    assert identity["judge"]["model"] == "fake-judge" and identity["judge"]["base_url"].startswith("http://127.0.0.1")
    assert (identity["judge"]["n"], identity["judge"]["temperature"]) == (2, 0.3)


def test_prompt_options_through_the_registry():
    from ivbench import registry
    from ivbench.registry import RegistryError, parse_spec

    assert registry.create("metrics", parse_spec("judge:mt-bench")).prompt.name == "mt-bench"
    metric = registry.create("metrics", parse_spec("judge:prompt=content-style"))
    assert set(metric.fields) == {"score", "content", "style"}
    assert registry.create("metrics", parse_spec("judge")).prompt.name == "llama-omni"
    with pytest.raises(ValueError, match="llama-omni"):
        JudgeScore(prompt="nope")
    with pytest.raises(RegistryError):
        registry.create("metrics", parse_spec("judge:temperature=1"))


# -- what the judge reads -----------------------------------------------------------------

@pytest.mark.parametrize("mode, question, answer", [
    ("s2s", "HEARD QUESTION", "HEARD REPLY"),  # both transcripts
    ("s2t", "HEARD QUESTION", "TEXT REPLY"),  # reply text, as LLaMA-Omni's S2T
    ("t2s", "SCRIPT QUESTION", "HEARD REPLY"),  # the turn's text: no user speech
    ("t2t", "SCRIPT QUESTION", "TEXT REPLY"),
])
def test_llama_omni_reads_transcripts_or_text_by_mode(server, settings, tmp_path, mode, question, answer):
    rec = record(mode, user_text="SCRIPT QUESTION", reply_text="TEXT REPLY")
    target = item(tmp_path, rec, transcript="HEARD REPLY" if mode[-1] == "s" else None,
                  user_transcript="HEARD QUESTION" if mode[0] == "s" else None)
    metric = JudgeScore()
    results, _ = run(metric, [target], settings())
    sent = user_message(server.requests[0])
    assert f"[What the user said]\n{question}\n" in sent
    assert f"[What the assistant replied]\n{answer}\n" in sent
    for unused in {"SCRIPT QUESTION", "HEARD QUESTION", "TEXT REPLY", "HEARD REPLY"} - {question, answer}:
        assert unused not in sent
    assert "Helpfulness" in sent and "speech interaction" in sent and "Score: N" in sent
    assert server.requests[0]["json"]["messages"] == metric.cache_inputs(target)["messages"]
    assert server.requests[0]["json"]["temperature"] == 0 and server.requests[0]["json"]["model"] == "fake-judge"
    assert results[0].values == {"score": 4.0}
    assert results[0].details["prompt"] == "llama-omni" and results[0].details["judge_model"] == "fake-judge"


def test_a_missing_transcript_is_missing_and_silence_is_judged(server, settings, tmp_path):
    no_asr = item(tmp_path, record("s2s"), transcript=None, user_transcript="question")
    no_user_asr = item(tmp_path, record("s2s", dialogue_id="d1"), transcript="reply", user_transcript=None)
    silent = item(tmp_path, record("s2s", dialogue_id="d2", reply_audio=None), user_transcript="question")
    results, _ = run(JudgeScore(), [no_asr, no_user_asr, silent], settings())
    assert results[0].status == "missing" and "transcript" in results[0].reason
    assert results[1].status == "missing" and "user turn" in results[1].reason
    assert results[2].status == "ok" and len(server.requests) == 1
    assert "[What the assistant replied]\n\n" in user_message(server.requests[0])


def test_mt_bench_single_turn_templates(server, settings, tmp_path):
    server.reply = "Rating: [[7]]"
    math = item(tmp_path, record("s2t", user_text="What is 2+2?", category="math", reference="4"),
                user_transcript="what is two plus two", transcript=None)
    writing = item(tmp_path, record("t2t", dialogue_id="d1", user_text="Write a haiku.", category="writing",
                                    reply_text="Autumn moon..."))
    results, _ = run(JudgeScore(prompt="mt-bench"), [math, writing], settings(concurrency=1))
    first, second = (r["json"]["messages"] for r in server.requests)
    assert first[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert "[Question]\nwhat is two plus two\n\n[The Start of Reference Answer]\n4\n" in first[1]["content"]
    assert "[The Start of Assistant's Answer]\nthe reply's own text\n" in first[1]["content"]
    assert "Reference Answer" not in second[1]["content"] and "[Question]\nWrite a haiku.\n" in second[1]["content"]
    assert [r.details["template"] for r in results] == ["single-math-v1", "single-v1"]
    assert [r.values["score"] for r in results] == [7.0, 7.0]


def _two_turns(tmp_path: Path, category: str, references: tuple[Optional[str], Optional[str]]):
    one = item(tmp_path, record("t2t", 0, user_text="Q1 text", reply_text="A1 text", category=category,
                                reference=references[0]))
    two = item(tmp_path, record("t2t", 1, user_text="Q2 text", reply_text="A2 text", category=category,
                                reference=references[1]))
    return one, two


def test_mt_bench_turn_two_reads_turn_one(server, settings, tmp_path):
    server.reply = "Rating: [[6]]"
    one, two = _two_turns(tmp_path, "writing", (None, None))
    two.previous = one  # what the scoring run links
    metric = JudgeScore(prompt="mt-bench")
    results, _ = run(metric, [two], settings())
    messages = server.requests[0]["json"]["messages"]
    assert "focus on the assistant's answer to the second user question" in messages[0]["content"]
    assert ("### User:\nQ1 text\n\n### Assistant A:\nA1 text\n\n### User:\nQ2 text\n\n### Assistant A:\nA2 text"
            in messages[1]["content"])
    assert results[0].details["template"] == "single-v1-multi-turn" and results[0].values == {"score": 6.0}
    assert metric.cache_inputs(two)["messages"] == messages


def test_mt_bench_math_turn_two_uses_both_references(server, settings, tmp_path):
    server.reply = "[[9]]"
    one, two = _two_turns(tmp_path, "math", ("R1 ref", "R2 ref"))
    # no explicit link: the metric finds turn 1 among the items it was shown
    results, _ = run(JudgeScore(prompt="mt-bench"), [one, two], settings(concurrency=1))
    first, second = (r["json"]["messages"] for r in server.requests)
    assert "[The Start of Reference Answer]\nR1 ref\n" in first[1]["content"]
    assert ("### User:\nQ1 text\n\n### Reference answer:\nR1 ref\n\n### User:\nQ2 text\n\n"
            "### Reference answer:\nR2 ref" in second[1]["content"])
    assert "### Assistant A:\nA1 text" in second[1]["content"]
    assert [r.details["template"] for r in results] == ["single-math-v1", "single-math-v1-multi-turn"]


def test_a_later_turn_without_its_previous_turn_is_missing(server, settings, tmp_path):
    _, two = _two_turns(tmp_path, "writing", (None, None))
    results, _ = run(JudgeScore(prompt="mt-bench"), [two], settings())
    assert results[0].status == "missing" and "turn 0" in results[0].reason
    assert not server.requests


def test_llama_omni_shows_earlier_turns_as_context(server, settings, tmp_path):
    one, two = _two_turns(tmp_path, "everyday", (None, None))
    two.previous = one
    run(JudgeScore(), [two], settings())
    sent = user_message(server.requests[0])
    assert "[Earlier in the conversation" in sent and "User: Q1 text\nAssistant: A1 text" in sent
    assert sent.index("A1 text") < sent.index("[What the user said]\nQ2 text")


def test_content_style_parses_both_scores(server, settings, tmp_path):
    server.push({"content": "Correct but reads like a web page.\nContent: 5\nStyle: 2"})
    metric = JudgeScore(prompt="content-style")
    results, _ = run(metric, [s2s_item(tmp_path)], settings())
    assert results[0].values == {"score": 3.5, "content": 5.0, "style": 2.0}
    assert "Content: N\nStyle: N" in user_message(server.requests[0])
    server.push({"content": "Content: 5 but I will not rate style."})
    failed, _ = run(JudgeScore(prompt="content-style"), [s2s_item(tmp_path, 9)], settings())
    assert failed[0].status == "failed" and failed[0].values == {"score": None, "content": None, "style": None}


def test_dialogue_judge_reads_every_turn(server, settings, tmp_path):
    turns = [item(tmp_path, record("s2s", i, n_turns=3, status="failed" if i == 1 else "ok",
                                   user_text=f"script {i}"),
                  transcript=f"heard reply {i}" if i != 1 else None,
                  user_transcript=f"heard question {i}" if i != 1 else None)
             for i in range(3)]
    metric = DialogueJudge()
    results, _ = run(metric, [DialogueItem(turns)], settings())
    sent = user_message(server.requests[0])
    assert ("Turn 1\nUser: heard question 0\nAssistant: heard reply 0\n\n"
            "Turn 2\nUser: script 1\nAssistant: (no reply)\n\n"
            "Turn 3\nUser: heard question 2\nAssistant: heard reply 2\n") in sent
    assert "Memory" in sent and "Coherence across turns" in sent
    assert results[0].status == "ok" and results[0].values == {"score": 4.0}
    assert results[0].details["prompt"] == "dialogue" and results[0].details["turns"] == [0, 1, 2]
    with pytest.raises(ValueError):
        DialogueJudge(prompt="llama-omni")


def test_prompts_render_from_plain_text():
    rendered = get_prompt("llama-omni").render(Exchange("What time is it?", "Noon {sharp}."))
    assert rendered.messages[-1]["content"].count("Noon {sharp}.") == 1  # braces in inputs are safe
    assert "[Earlier" not in rendered.messages[-1]["content"]
