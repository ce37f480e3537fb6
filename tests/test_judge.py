"""The LLM judge, through the real `openai` client against a local fake endpoint.

Every test talks HTTP to tests/fake_openai_server.py on 127.0.0.1; nothing leaves the machine.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from ivbench.judge import JudgeClient, JudgeConfigError, JudgeSettings
from ivbench.judge.prompts import Exchange, get_prompt
from ivbench.metrics.base import DialogueItem, MetricResult, ScoreItem, ScoringContext
from ivbench.metrics.judge import NO_JUDGE, DialogueJudge, JudgeScore, summarize_judgements
from ivbench.openai_endpoint import CONNECT_BACKOFF, is_openai
from ivbench.types import TurnRecord

from conftest import assert_user_error
from fake_openai_server import FakeOpenAIServer, closed_port

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
    stats = context.judge_client.stats
    assert (stats.http_requests, stats.retries, stats.errors) == (4, 3, 0)


def test_gives_up_after_the_retries_and_never_scores_zero(server, settings, tmp_path):
    server.push({"status": 503}, {"status": 503}, {"status": 503})
    results, context = run(JudgeScore(), [s2s_item(tmp_path)], settings(retries=2))
    assert len(server.requests) == 3
    result = results[0]
    assert result.status == "failed" and result.values == {"score": None}
    assert "HTTP 503" in result.reason and "after 2 retries" in result.reason
    assert context.judge_client.stats.errors == 1


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
    stats = context.judge_client.stats
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
    assert context.judge_client.stats.cache_hits == 1


def test_tokens_and_cost_are_summed_over_requests(server, settings, tmp_path):
    server.push({"content": "Score: 3", "usage": {"prompt_tokens": 1000, "completion_tokens": 200}},
                {"content": "Score: 4", "usage": {"prompt_tokens": 3000, "completion_tokens": 100}})
    judge = settings(concurrency=1, price_in=2.5, price_out=10.0)
    results, context = run(JudgeScore(), [s2s_item(tmp_path, 0), s2s_item(tmp_path, 1)], judge)
    assert [r.details["usage"] for r in results] == [{"prompt_tokens": 1000, "completion_tokens": 200},
                                                     {"prompt_tokens": 3000, "completion_tokens": 100}]
    stats = context.judge_client.stats.to_json(judge)
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
                 repr(judge), repr(JudgeClient(judge).endpoint)):
        assert SECRET not in str(blob)
    # A variable named explicitly but unset is an error that names it, for any endpoint.
    monkeypatch.delenv(KEY_ENV)
    for base_url in (None, server.url):
        with pytest.raises(JudgeConfigError, match=KEY_ENV):
            JudgeClient(JudgeSettings(model="gpt-4o", base_url=base_url, api_key_env=KEY_ENV))


@pytest.fixture
def keys(monkeypatch):
    """A clean key environment: OPENAI_API_KEY set (as on a developer's machine), nothing else."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    for name in ("IVBENCH_JUDGE_API_KEY", "OPENAI_BASE_URL", KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_openai_key_goes_to_openai_only(server, tmp_path, keys):
    """OPENAI_API_KEY never travels to another endpoint unless the user names it; a custom
    endpoint gets $IVBENCH_JUDGE_API_KEY, or no key at all."""
    local = dict(model="m", base_url=server.url, cache_dir=tmp_path / "c", use_cache=False)
    run(JudgeScore(), [s2s_item(tmp_path, 0)], JudgeSettings(**local))
    assert "authorization" not in server.requests[-1]["headers"]
    keys.setenv("IVBENCH_JUDGE_API_KEY", "sk-local-judge")
    run(JudgeScore(), [s2s_item(tmp_path, 1)], JudgeSettings(**local))
    assert server.requests[-1]["headers"]["authorization"] == "Bearer sk-local-judge"
    run(JudgeScore(), [s2s_item(tmp_path, 2)], JudgeSettings(**local, api_key_env="OPENAI_API_KEY"))
    assert server.requests[-1]["headers"]["authorization"] == "Bearer sk-openai-secret"  # named: meant
    # OpenAI's own API gets OPENAI_API_KEY by default, and needs it.
    assert JudgeSettings(model="gpt-4o").api_key() == "sk-openai-secret"
    keys.delenv("OPENAI_API_KEY")
    with pytest.raises(JudgeConfigError, match="OPENAI_API_KEY"):
        JudgeSettings(model="gpt-4o").api_key()
    assert not is_openai("http://api.openai.com.evil.example/v1") and is_openai("https://api.openai.com/v1")


def test_a_key_over_plain_http_to_another_host_is_warned_about(keys, caplog):
    keys.setenv("IVBENCH_JUDGE_API_KEY", "sk-local-judge")
    with caplog.at_level(logging.WARNING, logger="ivbench"):
        for url in ("http://127.0.0.1:8080/v1", "http://localhost:8080/v1", "https://judge.example/v1"):
            JudgeSettings(model="m", base_url=url).api_key()
        assert not caplog.records
        JudgeSettings(model="m", base_url="http://judge.example:8080/v1").api_key()
        JudgeSettings(model="m", base_url="http://judge.example:8080/v1").api_key()  # once, not per request
    assert len(caplog.records) == 1
    assert "IVBENCH_JUDGE_API_KEY" in caplog.text and "plain http" in caplog.text and "sk-" not in caplog.text
    caplog.clear()
    keys.delenv("IVBENCH_JUDGE_API_KEY")
    with caplog.at_level(logging.WARNING, logger="ivbench"):
        assert JudgeSettings(model="m", base_url="http://other.example:8080/v1").api_key() is None
    assert not caplog.records  # no key, nothing to leak


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


# -- a slow, stalled, dead or wrong endpoint --------------------------------------------------

LONG_REPLY = " ".join(f"word{i}" for i in range(20)) + "\nScore: 4"


def test_a_slow_reply_that_keeps_streaming_is_not_cut(server, settings, tmp_path):
    """The timeout is the longest silence, not the length of the reply: 21 words at 0.1 s each
    take 2 s, past a 0.5 s timeout, and arrive in one request."""
    server.push({"content": LONG_REPLY, "token_delay": 0.1})
    results, context = run(JudgeScore(), [s2s_item(tmp_path)], settings(timeout=0.5))
    assert results[0].status == "ok" and results[0].values == {"score": 4.0}
    assert len(server.requests) == 1 and context.judge_client.stats.retries == 0
    assert server.requests[0]["json"]["stream"] is True


def test_a_stalled_reply_is_given_up_and_the_server_stops_generating_it(settings, tmp_path):
    """A server that answers one request at a time (llama.cpp with one slot) and falls silent
    mid-reply: the client gives up after `timeout` of silence and closes the connection, so the
    server stops that reply at once instead of generating all of it before the retry."""
    with FakeOpenAIServer(serial=True) as server:
        server.push({"content": LONG_REPLY, "stall_after": 3, "stall": 1.5}, {"content": "Score: 5"})
        results, context = run(JudgeScore(), [s2s_item(tmp_path)],
                               settings(base_url=server.url, timeout=0.3, retries=10))
        assert results[0].status == "ok" and results[0].values == {"score": 5.0}
        # Retries sent while the stalled reply still held the one slot waited silently, timed
        # out and left the queue too; the stalled reply was stopped when the server woke.
        assert context.judge_client.stats.retries >= 1 and server.aborted >= 1
        assert server.max_generating == 1
        # 3 words before the stall, none after it, then "Score: 5".
        assert server.words_sent == 3 + 2


def test_a_queue_on_a_server_that_answers_one_at_a_time_is_not_silence(settings, tmp_path):
    """Three judgements at once on a one-slot server, each reply taking about 0.6 s to stream,
    with a 0.4 s timeout: the queued requests wait while the server streams the others, and
    none is given up and sent again."""
    with FakeOpenAIServer(serial=True, token_delay=0.05) as server:
        results, context = run(JudgeScore(), [s2s_item(tmp_path, i) for i in range(3)],
                               settings(base_url=server.url, timeout=0.4, concurrency=3))
        assert [r.status for r in results] == ["ok"] * 3
        assert server.max_in_flight == 3 and server.max_generating == 1
        assert context.judge_client.stats.retries == 0 and server.aborted == 0


def test_a_dead_server_fails_every_judgement_at_once(settings, tmp_path):
    """Connection refused: a short, bounded retry, then every judgement fails with the same
    reason, without retrying each one (the backoff of 5 retries would take about a minute)."""
    slept: list[float] = []
    judge = settings(base_url=f"http://127.0.0.1:{closed_port()}/v1", retries=5, concurrency=1)
    client = JudgeClient(judge, sleep=slept.append)
    results, _ = run(JudgeScore(), [s2s_item(tmp_path, i) for i in range(6)], client)
    assert [r.status for r in results] == ["failed"] * 6
    reasons = {r.details["error"] for r in results}
    assert len(reasons) == 1 and "unreachable (connection refused)" in reasons.pop()
    assert "--judge-base-url" in results[0].reason
    assert client.stats.http_requests == 3 and client.stats.errors == 6
    assert slept == [CONNECT_BACKOFF, 2 * CONNECT_BACKOFF]
    # Concurrent judgements stop as soon as one has found the server dead.
    many = JudgeClient(settings(base_url=judge.base_url, concurrency=4), sleep=lambda s: None)
    results, _ = run(JudgeScore(), [s2s_item(tmp_path, i) for i in range(20)], many)
    assert {r.status for r in results} == {"failed"} and many.stats.http_requests <= 4 * 3


def test_the_model_name_is_checked_against_the_served_models(settings, tmp_path):
    with FakeOpenAIServer(models=["judge-a", "judge-b"]) as server:
        results, _ = run(JudgeScore(), [s2s_item(tmp_path, i) for i in range(3)],
                         settings(base_url=server.url, model="judge-c"))
        assert not server.requests and len(server.gets) == 1  # checked once, nothing sent
        assert server.gets[0]["headers"]["authorization"] == f"Bearer {SECRET}"
        assert {r.details["error"] for r in results} == {
            f"model 'judge-c' is not served by {server.url}: it serves judge-a, judge-b; "
            "give one of those as --judge-model"}
        results, _ = run(JudgeScore(), [s2s_item(tmp_path)], settings(base_url=server.url, model="judge-b"))
        assert results[0].status == "ok"
        # llama.cpp lists the model file's path; Ollama adds ":latest".
        server.models = ["/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf", "llama3:latest"]
        for name in ("SmolLM2-135M-Instruct.Q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf", "llama3"):
            results, _ = run(JudgeScore(), [s2s_item(tmp_path, 7)], settings(base_url=server.url, model=name,
                                                                             use_cache=False))
            assert results[0].status == "ok", (name, results[0].reason)


@pytest.mark.parametrize("body, expected", [
    ({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                "code": "invalid_api_key"}}, "HTTP 400: Incorrect API key provided (invalid_api_key)"),
    ({"error": "model 'x' is not loaded"}, "HTTP 400: model 'x' is not loaded"),
    ({"detail": "Not authenticated"}, "HTTP 400: Not authenticated"),
    ({"detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}]},
     "HTTP 400: field required"),
    ("upstream connect error or disconnect/reset before headers", "HTTP 400: upstream connect error or "
                                                                   "disconnect/reset before headers"),
])
def test_error_bodies_of_any_shape_reach_the_reason(server, settings, tmp_path, body, expected):
    server.push({"status": 400, "body": body})
    results, _ = run(JudgeScore(), [s2s_item(tmp_path)], settings())
    assert results[0].status == "failed" and results[0].details["error"] == expected
    assert len(server.requests) == 1  # a 400 is not retried


def test_a_failure_mid_reply_and_a_reply_without_token_counts(server, settings, tmp_path):
    server.push({"content": LONG_REPLY, "fail_after": 2, "error": {"code": 500, "message": "context size exceeded"}},
                {"content": "Score: 2", "no_usage": True})
    client = JudgeClient(settings(concurrency=1))
    failed, unreported = run(JudgeScore(), [s2s_item(tmp_path, 0), s2s_item(tmp_path, 1)], client)[0]
    assert failed.details["error"] == "the server failed mid-reply: context size exceeded"
    assert len(server.requests) == 2  # not retried: the server said why
    assert unreported.values == {"score": 2.0}
    assert unreported.details["usage"] == {"prompt_tokens": None, "completion_tokens": None}  # unknown, not 0
    assert client.stats.endpoint.unreported_usage == 1 and client.stats.to_json()["unreported_usage"] == 1


def test_a_reply_cut_at_max_tokens_says_so(server, settings, tmp_path):
    server.push({"content": "Let me weigh the answer carefully before", "finish_reason": "length"},
                {"content": "Score: 3", "finish_reason": "length"})  # cut, but the rating made it
    results, _ = run(JudgeScore(), [s2s_item(tmp_path, 0), s2s_item(tmp_path, 1)],
                     settings(max_tokens=7, concurrency=1))
    assert server.requests[0]["json"]["max_tokens"] == 7
    cut, fine = results
    assert cut.status == "failed" and "cut at max_tokens=7" in cut.reason and "--judge-max-tokens" in cut.reason
    assert cut.details["finish_reasons"] == ["length"] and cut.details["cut_at_max_tokens"] == 1
    assert fine.status == "ok" and fine.values == {"score": 3.0}


def test_idle_connections_are_reused_and_a_closed_one_is_replaced(settings, tmp_path):
    with FakeOpenAIServer(keep_alive=True, models=["fake-judge"]) as server:
        client = JudgeClient(settings(base_url=server.url, concurrency=1))
        results, _ = run(JudgeScore(), [s2s_item(tmp_path, i) for i in range(3)], client)
        assert [r.status for r in results] == ["ok"] * 3
        assert server.connections == 1 and len(server.gets) == 1 and len(server.requests) == 3
        server.drop_connections()  # as a server does with connections idle too long
        results, _ = run(JudgeScore(), [s2s_item(tmp_path, 3)], client)
        assert results[0].status == "ok" and client.stats.retries == 0 and server.connections == 2


def test_the_summary_groups_failures_by_reason(server, settings, tmp_path):
    from ivbench.store.scores import ScoreRow

    server.push({"status": 400, "body": {"error": "bad request"}}, {"status": 400, "body": {"error": "bad request"}},
                {"content": "no rating here"}, {"content": "Score: 2"})
    metric = JudgeScore()
    results, _ = run(metric, [s2s_item(tmp_path, i) for i in range(4)], settings(concurrency=1))
    rows = [ScoreRow("judge", "sys", f"d{i}", 0, "s2s", r) for i, r in enumerate(results)]
    summary = summarize_judgements(rows, {"judge": metric})
    assert (summary.judged, summary.scored, summary.all_requests_failed) == (4, 1, False)
    assert summary.lines() == ["judge: 4 judgements, 1 scored, 2 failed requests, 1 without a rating",
                               "  2 × HTTP 400: bad request",
                               "  1 × unparseable judge reply: no 'Score: N' rating in the reply"]
    assert summarize_judgements(rows[:2], {"judge": metric}).all_requests_failed


def test_judge_options_in_a_run_file(tmp_path):
    from ivbench.config import load_config_file
    from ivbench.errors import ConfigError

    (tmp_path / "run.yaml").write_text("judge: {model: m, base_url: 'http://127.0.0.1:8080/v1', max_tokens: 512, "
                                       "timeout: 30, api_key_env: MY_JUDGE_KEY}\n")
    judge = load_config_file(tmp_path / "run.yaml")["judge"]
    assert isinstance(judge, JudgeSettings)
    assert (judge.max_tokens, judge.timeout, judge.api_key_env) == (512, 30, "MY_JUDGE_KEY")
    (tmp_path / "bad.yaml").write_text("judge: {model: m, timeout: 0}\n")
    with pytest.raises(ConfigError, match="timeout"):
        load_config_file(tmp_path / "bad.yaml")


# -- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parrot_run_dir(tmp_path_factory):
    """A finished text run of the parrot baseline (3 turns, no models), made once."""
    from click.testing import CliRunner

    from conftest import write_task
    from ivbench.cli import main

    folder = tmp_path_factory.mktemp("parrot")
    task = write_task(folder, [["Hello there.", "Second turn."], ["How are you?"]])
    result = CliRunner().invoke(main, ["eval", "--task", str(task), "--system", "parrot", "--mode", "t2t",
                                       "--warmup", "0", "--out", str(folder / "run"), "--no-progress",
                                       "--device", "cpu", "--metrics", "latency"])
    assert result.exit_code == 0, result.output
    return folder / "run"


@pytest.fixture
def parrot_run(parrot_run_dir, tmp_path, monkeypatch):
    """`ivbench score run --metrics judge …` on a fresh copy of the parrot run, in tmp_path."""
    import shutil

    from click.testing import CliRunner

    from ivbench.cli import main

    monkeypatch.chdir(tmp_path)
    shutil.copytree(parrot_run_dir, tmp_path / "run")
    return lambda *args: CliRunner().invoke(main, ["score", "run", "--metrics", "judge", "--no-progress",
                                                   "--device", "cpu", *args])


def test_score_says_which_judgements_failed_and_why(server, parrot_run, keys):
    server.push({"content": "Thinking it over at length", "finish_reason": "length"},
                {"status": 503, "body": "overloaded"}, {"content": "Score: 5"})
    result = parrot_run("--judge-model", "fake-judge", "--judge-base-url", server.url, "--judge-max-tokens", "64",
                        "--judge-timeout", "5", "--judge-retries", "0", "--judge-concurrency", "1")
    assert result.exit_code == 0, result.output
    assert {r["json"]["max_tokens"] for r in server.requests} == {64}
    assert "judge: 3 judgements, 1 scored, 1 failed requests, 1 without a rating" in result.output
    assert "1 × HTTP 503: overloaded" in result.output
    assert "1 × judge reply cut short: the reply was cut at max_tokens=64" in result.output
    assert "authorization" not in server.requests[0]["headers"]  # OPENAI_API_KEY stays home


def test_score_fails_when_every_judge_request_failed(server, parrot_run, keys):
    server.push(*[{"status": 401, "body": {"error": {"message": "Invalid API key", "code": "invalid_api_key"}}}] * 3)
    result = parrot_run("--judge-model", "fake-judge", "--judge-base-url", server.url, "--judge-concurrency", "1")
    assert_user_error(result, "every judge request failed (3): HTTP 401: Invalid API key (invalid_api_key)",
                      "ivbench score run")
    assert "3 × HTTP 401: Invalid API key (invalid_api_key)" in result.output
    assert len(server.requests) == 1  # a 401 stops the judge
    scores = [json.loads(line) for line in (Path("run") / "scores.jsonl").read_text().splitlines()]
    judged = [s for s in scores if s["metric"] == "judge"]  # written before the error
    assert len(judged) == 3 and all(s["status"] == "failed" for s in judged)
    assert (Path("run") / "summary.csv").exists()


def test_score_fails_when_the_judge_has_no_key(parrot_run, keys):
    keys.delenv("OPENAI_API_KEY")
    result = parrot_run("--judge-model", "gpt-4o")
    assert_user_error(result, "judge 'gpt-4o' at https://api.openai.com/v1: no API key", "OPENAI_API_KEY")
    assert (Path("run") / "scores.jsonl").exists()


def test_score_writes_judge_json_and_leaves_the_manifest_alone(server, parrot_run, keys):
    """Scoring never rewrites eval's manifest.json: what the judge was asked goes to judge.json,
    which `ivbench show` and the report read; a later score without a judge removes it."""
    from click.testing import CliRunner

    from ivbench.cli import main

    manifest = (Path("run") / "manifest.json").read_bytes()
    result = parrot_run("--judge-model", "fake-judge", "--judge-base-url", server.url, "--judge-concurrency", "1",
                        "--judge-price-in", "2.5", "--judge-price-out", "10")
    assert result.exit_code == 0, result.output
    assert (Path("run") / "manifest.json").read_bytes() == manifest
    judge = json.loads((Path("run") / "judge.json").read_text())
    assert judge["format_version"] == 1 and judge["settings"]["model"] == "fake-judge"
    assert "api_key" not in judge["settings"]
    usage = judge["usage"]
    assert (usage["calls"], usage["errors"], usage["http_requests"]) == (3, 0, 3)
    assert usage["prompt_tokens"] > 0 and usage["cost_usd"] == pytest.approx(
        (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10) / 1e6)

    line = f"fake-judge: 3 judgements (0 from the cache, 0 failed), 3 HTTP requests (0 retries), " \
           f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens, " \
           f"${usage['cost_usd']:.4f}"
    shown = CliRunner().invoke(main, ["show", "run"])
    assert shown.exit_code == 0 and f"judge:    {line}" in shown.output, shown.output
    as_json = json.loads(CliRunner().invoke(main, ["show", "run", "--json"]).output)
    assert as_json["judge"] == {"settings": judge["settings"], "usage": usage}
    report = CliRunner().invoke(main, ["report", "run", "-o", "r.html", "--audio", "none"])
    assert report.exit_code == 0, report.output
    page = Path("r.html").read_text()
    assert f"<th>judge usage</th><td>{line}</td>" in page

    # The same score again: every judgement from the score cache. judge.json said "0 judgements
    # (0 from the cache…)" for scores holding 3 judgements.
    again = parrot_run("--judge-model", "fake-judge", "--judge-base-url", server.url)
    assert again.exit_code == 0, again.output
    usage = json.loads((Path("run") / "judge.json").read_text())["usage"]
    assert (usage["calls"], usage["cache_hits"], usage["http_requests"]) == (3, 3, 0)
    assert "fake-judge: 3 judgements (3 from the cache, 0 failed), 0 HTTP requests" in \
        CliRunner().invoke(main, ["show", "run"]).output

    # Ctrl-C in a later metric: scores.jsonl is not rewritten, and neither is judge.json (it was,
    # describing a score that never landed).
    before = (Path("run") / "judge.json").read_bytes(), (Path("run") / "scores.jsonl").read_bytes()
    plugin = Path(__file__).resolve().parent / "plugins" / "scoring_metrics.py"
    cut = parrot_run("--metrics", f"judge;{plugin}:Interrupted", "--judge-model", "fake-judge",
                     "--judge-base-url", server.url, "--judge-temperature", "0.5")  # 3 new judgements
    assert cut.exit_code == 130, cut.output
    assert ((Path("run") / "judge.json").read_bytes(), (Path("run") / "scores.jsonl").read_bytes()) == before

    rescored = parrot_run("--metrics", "latency")  # no judge asked: its judge.json would describe other scores
    assert rescored.exit_code == 0, rescored.output
    assert not (Path("run") / "judge.json").exists()
    assert (Path("run") / "manifest.json").read_bytes() == manifest
    assert "judge:" not in CliRunner().invoke(main, ["show", "run"]).output


def test_score_checks_the_judge_model_before_any_metric_runs(parrot_run, keys):
    """As eval does: an unserved model is one line before any scoring, and the run's scores stay."""
    before = (Path("run") / "scores.jsonl").read_bytes()
    with FakeOpenAIServer(models=["judge-a", "judge-b"]) as server:
        result = parrot_run("--judge-model", "judge-c", "--judge-base-url", server.url)
        assert not server.requests
    assert_user_error(result, "model 'judge-c' is not served by", "judge-a, judge-b")
    assert (Path("run") / "scores.jsonl").read_bytes() == before


def test_eval_warns_before_generating_when_the_judge_cannot_be_reached(tmp_path, monkeypatch, keys):
    """It generated everything and only then said the judge was unreachable; generating still goes
    on (the server may be started meanwhile), but the user knows at once."""
    from click.testing import CliRunner

    from conftest import write_task
    from ivbench.cli import main

    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path, [["Hello there."]])

    def run(url: str, out: str) -> Any:
        return CliRunner().invoke(main, ["eval", "--task", str(task), "--system", "parrot", "--mode", "t2t",
                                         "--warmup", "0", "--out", out, "--no-progress", "--device", "cpu",
                                         "--metrics", "latency;judge", "--judge-model", "judge-a",
                                         "--judge-base-url", url])

    dead = run(f"http://127.0.0.1:{closed_port()}/v1", "dead")
    first = dead.output.splitlines()[0]
    assert first.startswith("warning: the judge cannot be reached now (") and "generating anyway" in first, dead.output
    assert dead.exit_code == 2 and (tmp_path / "dead" / "records.jsonl").stat().st_size > 0  # generated all the same
    with FakeOpenAIServer(models=["judge-a"]) as server:
        alive = run(server.url, "alive")
    assert alive.exit_code == 0 and "warning" not in alive.output, alive.output
