"""The public API is the names `ivbench` itself gives, each the object of its home module, and
importing ivbench stays light."""
import importlib
import subprocess
import sys

import pytest

import ivbench


def test_every_public_name_is_its_home_modules_object():
    names = set(ivbench.__all__) - {"__version__"}
    assert names == set(ivbench._HOMES), "__all__ and _HOMES name different things"
    for name in sorted(names):
        assert getattr(ivbench, name) is getattr(importlib.import_module(ivbench._HOMES[name]), name), name
    assert set(dir(ivbench)) >= names


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Sytem'"):
        ivbench.Sytem  # noqa: B018
    with pytest.raises(ImportError):
        exec("from ivbench import Sytem", {})


def test_importing_ivbench_imports_nothing_heavy():
    code = ("import sys, ivbench; from ivbench import System, Session, Mode, TextDelta, IvbenchError; "
            "print(sorted(m for m in ('numpy', 'click', 'torch', 'onnxruntime', 'ivbench.registry', "
            "'ivbench.runner') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_public_base_classes_are_the_ones_the_registry_accepts(tmp_path):
    from ivbench import registry

    entry = registry.create("systems", registry.parse_spec("ivbench.testing:Scripted"))
    assert isinstance(entry, ivbench.System)
    assert isinstance(registry.create("voices", registry.parse_spec("ivbench.testing:ScriptedVoice")), ivbench.Voice)
