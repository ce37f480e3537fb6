"""The README's promises: its plugin example runs as shown, its two commands are the ones CI uses,
and what it says the command line shows, it shows."""
import json
import re
import subprocess
import sys

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def _plugin_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    return next(b for b in blocks if "my_system.py" in b)


def test_plugin_example_is_about_twenty_lines_and_runs(tmp_path):
    code = _plugin_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 25
    (tmp_path / "my_system.py").write_text(code)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "eval", "--system", "./my_system.py:MySystem",
         "--limit", "2", "--warmup", "0", "--out", str(out), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert records and all(r["status"] == "ok" and r["mode"] == "s2s" for r in records)
    assert all(r["reply_text"] == f"You said: {r['user_text']}" for r in records)
    assert all((out / r["user_audio"]).stat().st_size > 1000 for r in records)  # Piper spoke them
    assert f"run directory: {out}" in proc.stdout


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```sh\n([^\n]*)\n```", README)
    assert commands[:2] == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M)
    makefile = (ROOT / "Makefile").read_text()
    # the test target lints and type-checks, then runs pytest
    recipe = re.search(r"^test: .*\n((?:\t.*\n?)+)", makefile, flags=re.M)
    assert recipe, makefile
    assert recipe.group(1).splitlines() == ["\t$(VENV)/bin/ruff check ivbench tests benchmarks", "\t$(VENV)/bin/mypy",
                                            "\t$(PY) -m pytest -q"]


def test_ivbench_list_shows_every_option_the_readmes_system_entries_use():
    """"`ivbench list` … show[s] every option" of the cascade: it listed metrics' options only."""
    import yaml
    from click.testing import CliRunner

    from ivbench.cli import main

    listing = CliRunner().invoke(main, ["list", "systems"])
    assert listing.exit_code == 0, listing.output
    shown: dict[str, set[str]] = {}
    for line in listing.output.splitlines()[1:]:
        if not line.startswith(" " * 4):
            name = line.split()[0]
            continue
        shown.setdefault(name, set()).update(re.findall(r"(\w+)=", re.sub(r'"[^"]*"', "", line)))
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README, flags=re.S)]
    entries = [e for b in blocks for e in b.get("systems", []) if isinstance(e, dict) and ":" not in e["name"]]
    assert entries, "the README's system entries"
    for entry in entries:
        for key in set(entry) - {"name", "label", "python", "resources"}:  # the run config's own keys
            assert key in shown[entry["name"]], (entry, key)
    # and the command-line form it shows: cascade:theta=1,voice=piper:joe,asr_model=base.en
    (spec,) = re.findall(r"--system (cascade:[^`\s]+)", README)
    assert {kv.split("=")[0] for kv in spec.split(":", 1)[1].split(",")} <= shown["cascade"]
