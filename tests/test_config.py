"""The run configuration is declared once (EvalConfig's fields, JudgeSettings' fields): the
flags, the run YAML, the manifest and the resume check all come from those declarations."""
from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from click.testing import CliRunner

from conftest import assert_user_error, write_task
from fake_openai_server import FakeOpenAIServer
from ivbench.cli import main
from ivbench.config import EvalConfig, load_config_file, merge_flags, options, yaml_keys
from ivbench.judge.settings import JudgeSettings, flag_fields


def _ivbench(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def test_every_option_is_a_flag_and_a_yaml_key_and_in_the_manifest(tmp_path, monkeypatch):
    eval_help = _ivbench("eval", "--help").output
    score_help = _ivbench("score", "--help").output
    for _, opt in options():
        if opt.flag:
            for flag in opt.flag.split("/"):
                assert flag in eval_help, flag
                assert (flag in score_help) == opt.score, flag
    for f in flag_fields():
        assert f.metadata["flag"] in eval_help and f.metadata["flag"] in score_help
    # A run's manifest records every setting a YAML may give, under its YAML key.
    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path, [["Hello."]])
    result = _ivbench("eval", "--task", str(task), "--system", "parrot", "--mode", "t2t", "--warmup", "0",
                      "--out", "run", "--no-progress")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(manifest["config"]) == set(yaml_keys())
    identity = {opt.key or f.name for f, opt in options() if opt.identity}
    assert identity == {"task", "systems", "voice", "mode", "seed"}
    # What each label runs is part of it too (a label alone does not say).
    assert set(manifest["identity"]) == identity | {"system_options"}
    assert manifest["identity"]["system_options"] == {"parrot": {"system": "parrot", "options": {}, "python": None}}


def test_flags_given_win_over_the_file_and_the_rest_of_the_file_stays(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"task": "vicuna", "limit": 3, "warmup": 2, "seed": 5, "mode": ["t2t"],
                                    "judge": {"model": "m", "timeout": 30, "prices": [1.0, 2.0]}}))
    kwargs = load_config_file(path)
    config = EvalConfig(**merge_flags(kwargs, {"limit": 1, "judge_timeout": 5.0, "judge_n": 2}))
    assert (config.task.label, config.limit, config.warmup, config.seed) == ("vicuna", 1, 2, 5)
    assert config.judge == JudgeSettings(model="m", timeout=5.0, n=2, price_in=1.0, price_out=2.0)
    # The defaults are the declarations'.
    defaults = EvalConfig()
    declared = {f.name: f.default for f in dataclasses.fields(EvalConfig) if f.default is not dataclasses.MISSING}
    assert all(getattr(defaults, name) == value for name, value in declared.items())
    assert [s.label for s in defaults.systems] == ["parrot", "cascade"] and defaults.task.label == "demo"


def test_judge_flags_without_a_model_are_refused_with_the_flag_named():
    from ivbench.errors import ConfigError

    with pytest.raises(ConfigError, match="--judge-timeout given without a judge"):
        merge_flags({}, {"judge_timeout": 5.0})


def test_a_flag_value_is_checked_like_the_same_yaml_value(tmp_path):
    (tmp_path / "run.yaml").write_text("mode: [s3s]\n")
    assert_user_error(_ivbench("eval", "-c", str(tmp_path / "run.yaml")), "run.yaml:1: field 'mode[0]'",
                      "unknown mode 's3s'")
    assert_user_error(_ivbench("eval", "--metrics", "no_such_metric"), "--metrics", "unknown metric")
    assert_user_error(_ivbench("eval", "--system", "parrot:voice="), "system 'parrot:voice='", "empty plugin name")


def test_an_unserved_judge_model_fails_before_anything_is_generated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path, [["Hello."]])
    with FakeOpenAIServer(models=["served-model"]) as server:
        result = _ivbench("eval", "--task", str(task), "--system", "parrot", "--mode", "t2t", "--out", "run",
                          "--no-progress", "--judge-model", "other-model", "--judge-base-url", server.url)
    assert_user_error(result, "'other-model' is not served", "served-model")
    assert not (tmp_path / "run").exists()
