"""The cascade's `openai` LLM backend against a streaming OpenAI-compatible server that the
tests start on 127.0.0.1 (tests/fake_openai_server.py): the history it sends, streamed
speech, and the failures of an endpoint (unreachable, HTTP errors, too slow, no key).

Whisper tiny.en and Piper run for real where a test has speech; no LLM weights are loaded.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fake_openai_server import FakeOpenAIServer, closed_port, pieces
from ivbench.asr import word_errors
from ivbench.config import EvalConfig, load_config_file
from ivbench.errors import EndpointError
from ivbench.openai_endpoint import CONNECT_RETRIES
from ivbench.runner.clock import time_turn
from ivbench.runner.runner import run_eval
from ivbench.systems.cascade import DEFAULT_SYSTEM_PROMPT, Cascade, CascadeOpenAI, LLMError
from ivbench.types import Audio, AudioChunk, Mode, StageMark, TextDelta, TurnInput

FIRST, SECOND = "What is the capital city of Canada?", "Which province is it in?"
REPLY_1, REPLY_2 = "The capital of Canada is Ottawa.", "Ottawa is in the province of Ontario."


@pytest.fixture
def server():
    with FakeOpenAIServer(reply="I am not sure.") as s:
        yield s


def _text_cascade(url: str, **options) -> Cascade:
    system = Cascade(llm_backend="openai", llm_model="fake-llm", base_url=url, asr_backend=None,
                     voice=None, **options)
    system.load("cpu")
    return system


def _events(session, turn):
    timing = time_turn(session, turn, 60)
    return timing, [(ns / 1e6, e) for ns, e in timing.events]


def test_the_second_request_carries_the_first_turn(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.push({"content": REPLY_1}, {"content": REPLY_2})
    session = _text_cascade(server.url).new_session()
    for text, reply in ((FIRST, REPLY_1), (SECOND, REPLY_2)):
        timing, events = _events(session, TurnInput(Mode.T2T, text))
        assert timing.error is None, timing.error
        assert "".join(e.text for _, e in events if isinstance(e, TextDelta)) == reply
    first, second = (r["json"] for r in server.requests)
    assert first["stream"] is True and first["model"] == "fake-llm" and first["temperature"] == 0
    assert second["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": REPLY_1},
        {"role": "user", "content": SECOND},
    ]
    # No key named: a local endpoint gets none (and no error).
    assert "authorization" not in server.requests[0]["headers"]


def test_the_key_comes_from_the_named_environment_variable(server, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    session = _text_cascade(server.url, api_key_env="MY_LLM_KEY", system_prompt=None).new_session()
    timing, _ = _events(session, TurnInput(Mode.T2T, FIRST))
    assert timing.error is None
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test-123"
    assert server.requests[0]["json"]["messages"] == [{"role": "user", "content": FIRST}]  # no system prompt
    # OPENAI_API_KEY goes to OpenAI's API only: another endpoint gets it when it is named.
    _events(_text_cascade(server.url).new_session(), TurnInput(Mode.T2T, FIRST))
    assert "authorization" not in server.requests[1]["headers"]
    _events(_text_cascade(server.url, api_key_env="OPENAI_API_KEY").new_session(), TurnInput(Mode.T2T, FIRST))
    assert server.requests[2]["headers"]["authorization"] == "Bearer sk-openai-secret"


def test_a_model_the_server_does_not_serve_fails_at_load():
    with FakeOpenAIServer(models=["served-llm", "other-llm"]) as server:
        with pytest.raises(EndpointError, match="model 'fake-llm' is not served by .*: it serves served-llm, "
                                                "other-llm; give one of those as llm_model"):
            _text_cascade(server.url)
        assert not server.requests
        system = Cascade(llm_backend="openai", llm_model="served-llm", base_url=server.url, asr_backend=None,
                         voice=None)
        system.load("cpu")
        timing, _ = _events(system.new_session(), TurnInput(Mode.T2T, FIRST))
        assert timing.error is None and server.requests[0]["json"]["model"] == "served-llm"


def test_spoken_dialogue_through_the_runner_from_a_yaml_entry(server, tmp_path):
    """cascade-openai (Whisper + endpoint + Piper) in s2s: the endpoint sees what the ASR heard
    and the earlier reply; the records carry the reply, its speech and the stages."""
    server.push({"content": REPLY_1}, {"content": REPLY_2})
    (tmp_path / "t.jsonl").write_text(json.dumps({"id": "d0", "turns": [FIRST, SECOND]}) + "\n")
    (tmp_path / "t.yaml").write_text("name: t\ndialogues_file: t.jsonl\n")
    (tmp_path / "run.yaml").write_text(
        f"task: {tmp_path / 't.yaml'}\n"
        f"systems:\n  - {{name: cascade-openai, label: remote, llm_model: fake-llm, base_url: '{server.url}', "
        "theta: 2, voice: piper:joe}\n"
        f"warmup: 0\nout: {tmp_path / 'run'}\n")
    result = run_eval(EvalConfig(**load_config_file(tmp_path / "run.yaml")), progress=False)
    records = sorted(result.records, key=lambda r: r.turn_index)
    assert [r.status for r in records] == ["ok", "ok"], [r.error for r in records]
    assert [r.mode for r in records] == ["s2s", "s2s"]
    assert [r.reply_text for r in records] == [REPLY_1, REPLY_2]
    assert all(r.reply_audio and r.first_audio_ms is not None for r in records)
    assert set(records[0].stages) == {"asr_done", "llm_first_token", "tts_first_input", "tts_first_chunk",
                                      "llm_done", "tts_done"}
    second = server.requests[1]["json"]["messages"]
    heard_first = second[1]["content"]
    errors, words = word_errors(FIRST, heard_first)
    assert second[1]["role"] == "user" and errors / words < 0.15, heard_first
    assert second[2] == {"role": "assistant", "content": REPLY_1}
    assert second[3]["role"] == "user" and second[3]["content"].strip()  # what the ASR heard


def test_streamed_tokens_are_spoken_before_the_endpoint_has_finished(server):
    reply = ("Sure. The sky looks blue because air scatters the short blue waves of sunlight much more "
             "than the long red ones, so blue light reaches your eyes from every part of the sky.")
    server.push({"content": reply, "token_delay": 0.05})
    system = Cascade(llm_backend="openai", llm_model="fake-llm", base_url=server.url, asr_backend=None, theta=1)
    system.load("cpu")
    timing, events = _events(system.new_session(), TurnInput(Mode.T2S, "Why is the sky blue?"))
    assert timing.error is None, timing.error
    deltas = [e.text for _, e in events if isinstance(e, TextDelta)]
    assert deltas == pieces(reply)  # each streamed token is yielded as it comes
    stages = {e.name: t for t, e in events if isinstance(e, StageMark)}
    first_audio = next(t for t, e in events if isinstance(e, AudioChunk))
    assert first_audio < stages["llm_done"], stages
    # The endpoint takes ≥ 1.5 s to send the reply; the first word is spoken well before.
    assert stages["llm_done"] - first_audio > 0.5e3


def test_an_abandoned_turn_closes_its_request_and_the_server_stops(server):
    reply = " ".join(f"word{i}" for i in range(40)) + "."
    server.push({"content": reply, "token_delay": 0.05})
    events = _text_cascade(server.url).new_session().respond(TurnInput(Mode.T2T, FIRST))
    assert isinstance(next(e for e in events if isinstance(e, TextDelta)), TextDelta)
    events.close()  # the runner gave up on the turn (timeout, Ctrl-C)
    deadline = time.monotonic() + 10
    while server.aborted == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.aborted == 1 and server.words_sent < len(pieces(reply))


def test_an_unreachable_endpoint_fails_the_turn_clearly(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    system = _text_cascade(url, llm_retries=5)
    session = system.new_session()
    with pytest.raises(LLMError, match=r"is unreachable \(connection refused\); check base_url"):
        list(session.respond(TurnInput(Mode.T2T, FIRST)))
    assert session.history == []
    # A refused connection is retried briefly (not 5 times with backoff); the next turn fails at
    # once, without another attempt.
    assert system.llm.stats.http_requests == 1 + CONNECT_RETRIES
    with pytest.raises(LLMError, match="is unreachable"):
        list(session.respond(TurnInput(Mode.T2T, SECOND)))
    assert system.llm.stats.http_requests == 1 + CONNECT_RETRIES
    # Through the runner: each turn is a failed record with that message, and the run goes on.
    (tmp_path / "t.jsonl").write_text(json.dumps({"id": "d0", "turns": [FIRST, SECOND]}) + "\n")
    (tmp_path / "t.yaml").write_text("name: t\ndialogues_file: t.jsonl\n")
    (tmp_path / "run.yaml").write_text(
        f"task: {tmp_path / 't.yaml'}\nsystems:\n  - {{name: cascade-openai, llm_model: m, base_url: '{url}', "
        f"llm_retries: 0, asr_backend: null, voice: null}}\nmode: t2t\nwarmup: 0\nout: {tmp_path / 'run'}\n")
    result = run_eval(EvalConfig(**load_config_file(tmp_path / "run.yaml")), progress=False)
    assert [r.status for r in result.records] == ["failed", "failed"]
    assert all("unreachable" in r.error["message"] and url in r.error["message"] for r in result.records)


def test_http_errors_and_slow_endpoints_fail_the_turn_and_the_session_goes_on(server):
    session = _text_cascade(server.url, llm_retries=0, llm_timeout=0.5).new_session()
    server.push({"status": 500}, {"delay": 2.0}, {"content": REPLY_1})
    with pytest.raises(LLMError, match=r"\(model 'fake-llm'\): HTTP 500: scripted HTTP 500"):
        list(session.respond(TurnInput(Mode.T2T, FIRST)))
    with pytest.raises(LLMError, match=r"no reply for 0.5 s \(llm_timeout\)"):
        list(session.respond(TurnInput(Mode.T2T, FIRST)))
    events = list(session.respond(TurnInput(Mode.T2T, FIRST)))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == REPLY_1
    assert session.history == [{"role": "user", "content": FIRST}, {"role": "assistant", "content": REPLY_1}]
    server.push({"content": "   "})  # a reply with no words fails the turn too
    with pytest.raises(LLMError, match="empty reply"):
        list(session.respond(TurnInput(Mode.T2T, SECOND)))
    assert len(session.history) == 2


def test_openai_itself_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    system = CascadeOpenAI(llm_model="gpt-4o-mini", asr_backend=None, voice=None)
    with pytest.raises(ValueError, match="no API key.*OPENAI_API_KEY"):
        system.load("cpu")
    with pytest.raises(ValueError, match="needs llm_model"):
        CascadeOpenAI()


def test_silence_is_an_empty_transcript_and_the_endpoint_is_not_asked(server):
    system = Cascade(llm_backend="openai", llm_model="fake-llm", base_url=server.url, voice=None)
    system.load("cpu")
    session = system.new_session()
    silence = Audio(np.zeros(24000, dtype=np.float32), 16000)
    timing, events = _events(session, TurnInput(Mode.S2T, "(silence)", audio=silence))
    assert timing.error["type"] == "EmptyTranscriptError" and "nothing to answer" in timing.error["message"]
    assert [e.name for _, e in events] == ["asr_done"] and server.requests == []
    assert session.log[-1].heard == "" and session.log[-1].error
