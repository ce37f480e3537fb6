"""The default cascade end to end with its real models: Whisper tiny.en → SmolLM2-135M-Instruct
(GGUF, transformers) → Piper joe, offline.

The weights are loaded once for the module (other cascades in this file share them: the
transformers backend keeps one copy per process while a system holds it). On the 2-core dev
machine under other test load: loading ~20–45 s, the two demo dialogues (5 turns) ~20 s.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import ROOT
from ivbench.asr import word_errors
from ivbench.config import EvalConfig, load_config_file
from ivbench.runner.clock import time_turn
from ivbench.runner.runner import run_eval
from ivbench.systems.cascade import STAGES, Cascade, EmptyTranscriptError
from ivbench.types import Audio, AudioChunk, Mode, StageMark, TextDelta, TurnInput

pytestmark = pytest.mark.slow

# Two demo dialogues with short replies (five turns); the whole demo task is in the benchmark.
DIALOGUES = ("days-of-week", "capital-city")
LONG_ANSWER = "Can you tell me, in a few sentences, why the sky looks blue during the day?"


def _demo(ids=DIALOGUES) -> dict[str, list[str]]:
    dialogues = {}
    for line in (ROOT / "tasks" / "demo.jsonl").read_text().splitlines():
        d = json.loads(line)
        if d["id"] in ids:
            dialogues[d["id"]] = [t["text"] if isinstance(t, dict) else t for t in d["turns"]]
    assert set(dialogues) == set(ids)
    return dialogues


def _text(result) -> str:
    return str(getattr(result, "text", result))


def _timed(session, turn: TurnInput) -> dict:
    """One turn under the runner's clock: stage marks, first audio, text and audio."""
    timing = time_turn(session, turn, 180)
    out = {"error": timing.error, "stages": {}, "first_audio": None, "text": "", "chunks": []}
    for ns, event in timing.events:
        if isinstance(event, StageMark):
            out["stages"].setdefault(event.name, ns / 1e6)
        elif isinstance(event, TextDelta):
            out["text"] += event.text
        elif isinstance(event, AudioChunk) and event.samples.size:
            out["first_audio"] = ns / 1e6 if out["first_audio"] is None else out["first_audio"]
            out["chunks"].append(event)
    out["end"] = None if timing.end_ns is None else timing.end_ns / 1e6
    if out["chunks"]:
        out["audio"] = Audio(np.concatenate([c.samples for c in out["chunks"]]), out["chunks"][0].sample_rate)
    return out


@pytest.fixture(scope="module")
def cascade():
    system = Cascade()  # the `cascade` preset: every option at its default
    system.load("cpu")
    yield system
    system.close()


@pytest.fixture(scope="module")
def demo_run(cascade):
    """The two demo dialogues, spoken by Piper and answered in s2s, one session each."""
    turns = []
    for dialogue_id, texts in _demo().items():
        session = cascade.new_session()
        for i, text in enumerate(texts):
            audio = cascade.voice.speak(text)
            out = _timed(session, TurnInput(Mode.S2S, text, audio, dialogue_id, i))
            out.update(dialogue=dialogue_id, index=i, user_text=text, heard=session.log[-1].heard,
                       history=list(session.history))
            turns.append(out)
    return turns


def test_user_turns_are_heard_with_wer_under_15_percent(demo_run):
    assert len(demo_run) == 5
    errors = words = 0
    for turn in demo_run:
        assert turn["heard"], turn
        e, n = word_errors(turn["user_text"], turn["heard"])
        errors, words = errors + e, words + n
    assert errors / words < 0.15, [(t["user_text"], t["heard"]) for t in demo_run]


def test_every_reply_is_text_and_speech_with_its_stages_in_order(demo_run):
    for turn in demo_run:
        assert turn["error"] is None, turn["error"]
        assert turn["text"].strip()
        assert turn["chunks"] and all(c.samples.dtype == np.float32 and c.samples.ndim == 1
                                      for c in turn["chunks"])
        s = turn["stages"]
        assert set(s) == set(STAGES), s
        assert s["asr_done"] <= s["llm_first_token"] <= s["tts_first_input"] <= s["tts_first_chunk"]
        assert s["tts_first_chunk"] <= turn["first_audio"] <= s["tts_done"] <= turn["end"]
        assert s["llm_first_token"] <= s["llm_done"] <= s["tts_done"]


def test_each_reply_speech_says_its_own_text(cascade, demo_run):
    for turn in demo_run:
        heard = _text(cascade.asr.transcribe(turn["audio"]))
        errors, words = word_errors(turn["text"], heard)
        assert words and errors / words < 0.20, (turn["text"], heard)


def test_the_session_keeps_the_dialogue_history(demo_run):
    for turn in demo_run:
        history = turn["history"]
        assert len(history) == 2 * (turn["index"] + 1)
        assert history[-2] == {"role": "user", "content": turn["heard"]}  # what the ASR heard
        assert history[-1] == {"role": "assistant", "content": turn["text"].strip()}
    # A later turn's history starts with the earlier turns of the same dialogue.
    first, second = demo_run[0], demo_run[1]
    assert second["dialogue"] == first["dialogue"] and second["history"][:2] == first["history"]


def test_small_theta_speaks_before_the_llm_has_finished(cascade):
    streaming = Cascade(theta=1, asr_backend=None, max_new_tokens=40)  # shares the loaded LLM weights
    streaming.load("cpu")
    out = _timed(streaming.new_session(), TurnInput(Mode.T2S, LONG_ANSWER))
    assert out["error"] is None, out["error"]
    assert len(out["text"].split()) > 10
    assert out["first_audio"] < out["stages"]["llm_done"], out["stages"]
    assert "asr_done" not in out["stages"]  # text input: no ASR stage


def test_whole_text_theta_speaks_after_the_llm_has_finished(cascade):
    whole = Cascade(theta=None, asr_backend=None, max_new_tokens=24)
    whole.load("cpu")
    out = _timed(whole.new_session(), TurnInput(Mode.T2S, LONG_ANSWER))
    assert out["error"] is None, out["error"]
    assert out["stages"]["llm_done"] <= out["stages"]["tts_first_input"] <= out["first_audio"]


def test_greedy_replies_are_reproducible_and_text_modes_have_no_speech(cascade):
    session_a, session_b = cascade.new_session(), cascade.new_session()
    a = _timed(session_a, TurnInput(Mode.T2T, "What is the capital city of Canada?"))
    b = _timed(session_b, TurnInput(Mode.T2T, "What is the capital city of Canada?"))
    assert a["error"] is None and a["text"] == b["text"] and a["text"].strip()
    assert not a["chunks"] and "tts_first_chunk" not in a["stages"] and "asr_done" not in a["stages"]


def test_silence_fails_the_turn_with_a_clear_error(cascade):
    session = cascade.new_session()
    silence = Audio(np.zeros(32000, dtype=np.float32), 16000)
    out = _timed(session, TurnInput(Mode.S2S, "(silence)", silence))
    assert out["error"]["type"] == EmptyTranscriptError.__name__
    assert "heard no words" in out["error"]["message"]
    assert "asr_done" in out["stages"] and not out["text"] and not out["chunks"]
    assert session.history == []  # a failed turn is not part of the history


def test_runner_records_cascade_turns_with_stages_from_a_yaml_entry(cascade, tmp_path):
    """`ivbench eval`'s generation phase with a YAML system entry and a recorded silent turn."""
    soundfile.write(tmp_path / "silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    (tmp_path / "t.jsonl").write_text(
        json.dumps({"id": "d0", "turns": ["What is the capital city of Canada?",
                                          {"text": "(silence)", "audio": "silence.wav"}]}) + "\n")
    (tmp_path / "t.yaml").write_text("name: t\ndialogues_file: t.jsonl\n")
    (tmp_path / "run.yaml").write_text(
        f"task: {tmp_path / 't.yaml'}\n"
        "systems:\n  - {name: cascade, label: c, theta: 3, max_new_tokens: 24}\n"
        f"mode: [s2s, s2t]\nwarmup: 0\nout: {tmp_path / 'run'}\n")
    result = run_eval(EvalConfig(**load_config_file(tmp_path / "run.yaml")), progress=False)
    records = {(r.system, r.turn_index): r for r in result.records}
    assert set(records) == {("c@s2s", 0), ("c@s2s", 1), ("c@s2t", 0), ("c@s2t", 1)}
    spoken, written = records[("c@s2s", 0)], records[("c@s2t", 0)]
    assert spoken.ok and written.ok, (spoken.error, written.error)
    assert spoken.reply_text == written.reply_text  # greedy: the same reply in both modes
    assert set(spoken.stages) == set(STAGES) and spoken.first_audio_ms is not None
    assert set(written.stages) == {"asr_done", "llm_first_token", "llm_done"} and written.reply_audio is None
    assert (Path(result.run_dir) / spoken.reply_audio).is_file()
    for record in (spoken, written):  # what the cascade answered is in its record
        errors, words = word_errors(record.user_text, record.stage_data["asr_done"]["transcript"])
        assert errors / words < 0.2, record.stage_data
    for mode in ("s2s", "s2t"):
        failed = records[(f"c@{mode}", 1)]
        assert failed.status == "failed" and failed.error["type"] == "EmptyTranscriptError"
        assert "heard no words" in failed.error["message"]
        assert failed.stage_data == {"asr_done": {"transcript": ""}}


def test_the_gguf_llm_is_converted_once_with_the_same_logits(tmp_path, monkeypatch, caplog):
    """The first load converts the GGUF file to a transformers folder; a load from that folder
    gives the GGUF load's logits and tokens exactly; a converted folder that does not load is
    converted again."""
    import torch

    from ivbench.systems.cascade import llm as cascade_llm

    monkeypatch.setenv("IVBENCH_MODELS_DIR", str(tmp_path / "models"))
    prompt = [{"role": "user", "content": "Name a fruit, please."}]

    def load() -> tuple[torch.Tensor, list[int], str]:
        cascade_llm._LOADED.clear()
        model = cascade_llm.TransformersLLM(max_new_tokens=12)
        model.load("cpu")
        weights = model._weights
        assert weights is not None
        ids = weights.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        with torch.no_grad():
            logits = weights.model(**ids).logits
        return logits, ids["input_ids"][0].tolist(), weights.tokenizer.chat_template

    from_gguf = load()
    [folder] = (tmp_path / "models" / "llm-gguf").iterdir()
    assert (folder / "model.safetensors").is_file() and "float32" in folder.name
    from_folder = load()
    assert torch.equal(from_gguf[0], from_folder[0])
    assert from_gguf[1:] == from_folder[1:]
    # a damaged folder: warned about, converted again, the same logits
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    again = load()
    assert "converting the GGUF file again" in caplog.text
    assert torch.equal(from_gguf[0], again[0]) and (folder / "model.safetensors").stat().st_size > 10**8
    cascade_llm._LOADED.clear()
