"""The scoring package's seams: what `ivbench.scoring.context` imports, and a metric that cannot
load noted once, by a flag the scoring run carries (not by reading its results' text)."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from conftest import ROOT, write_task
from ivbench.cli import main
from ivbench.registry import parse_spec
from ivbench.scoring import ScoreConfig, score_run
from ivbench.store.scores import read_scores

PLUGINS = ROOT / "tests" / "plugins" / "unloadable_metrics.py"


def test_the_scoring_context_imports_nothing_of_the_phase():
    """The metric interface imports `ivbench.scoring.context`; the package must not pull in the
    phase that runs metrics then (it imports the metric interface: a cycle)."""
    code = ("import sys, ivbench.scoring.context; "
            "print(sorted(m for m in sys.modules if m.startswith('ivbench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['ivbench', 'ivbench.scoring', 'ivbench.scoring.context']"


def test_a_metric_that_cannot_load_is_noted_once_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path, [["Hello there."], ["How are you?"]])
    result = CliRunner().invoke(main, ["eval", "--task", str(task), "--system", "parrot", "--mode", "t2t",
                                       "--warmup", "0", "--out", "run", "--no-score", "--no-progress"])
    assert result.exit_code == 0, result.output
    absent, reads = f"{PLUGINS}:AbsentTranscript", f"{PLUGINS}:ReadsTranscript"
    said: list[str] = []
    outcome = score_run(tmp_path / "run", ScoreConfig(metrics=[parse_spec(reads), parse_spec(absent)]),
                        progress=False, echo=said.append)
    reason = f"{absent} could not be loaded: ImportError: this metric needs pip install something-absent"
    assert outcome.notes == [reason] and said == [f"note: {reason}"]
    rows = read_scores(tmp_path / "run")
    assert {(r.metric, r.result.status, r.result.reason) for r in rows} == {
        (absent, "missing", reason), (reads, "missing", f"no transcript: {reason}")}
    assert len(rows) == 4
    # At the command line too, once: it was also logged, and with no logging configured Python's
    # last-resort handler printed it bare (a subprocess: pytest's own log handlers hide that).
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "score", "run", "--metrics", absent, "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count(reason) == 1, proc.stderr
