import json
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's ~/.cache/ivbench."""
    monkeypatch.setenv("IVBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    # Converted models (the cascade's GGUF LLM as a transformers folder) are a function of their
    # file alone: converted once for the whole session, as a user's machine converts once.
    monkeypatch.setenv("IVBENCH_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "models"))
    # `ivbench eval` scores after generating; tests about the harness score only latency
    # (no models to load). Tests of scoring choose their metrics explicitly.
    monkeypatch.setenv("IVBENCH_METRICS", "latency")
    # Bodies meant for CUDA graphs are recorded and replayed as a graph would be (cuda_graphs.py),
    # so that code a capture would freeze fails here, not first on a GPU.
    monkeypatch.setenv("IVBENCH_EMULATE_GRAPHS", "1")
    # The suites' scorers read their authors' text from a checkout these name: tests name the
    # made-up stand-ins under tests/data/authors themselves, never a real checkout of the user's.
    for name in ("IVBENCH_VOICEBENCH_CODE", "IVBENCH_UROBENCH_CODE", "IVBENCH_BIG_BENCH_AUDIO_PROMPT"):
        monkeypatch.delenv(name, raising=False)


def write_task(folder: Path, dialogues: list[list[str]], name: str = "tiny") -> Path:
    """A task file with the given user turns, one list per dialogue."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": f"d{i}", "turns": turns}) for i, turns in enumerate(dialogues)]
    (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (folder / f"{name}.yaml").write_text(f"name: {name}\ndialogues_file: {name}.jsonl\n")
    return folder / f"{name}.yaml"


def assert_user_error(result, *fragments: str) -> None:
    """What the user can fix: exit 2, one line 'error: …' naming the problem, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def rewrite_summary(run: Path, metric_specs: list[str]) -> None:
    """summary.csv as scoring would have written it for the run's scores.jsonl (for tests that
    append made-up score rows): the report reads each field's direction and unit from it."""
    from ivbench.registry import parse_spec
    from ivbench.scoring import plan_metrics
    from ivbench.store import RunStore
    from ivbench.store.scores import read_scores
    from ivbench.scoring.summary import write_summary

    store = RunStore(run)
    metrics = dict(plan_metrics([parse_spec(m) for m in metric_specs]))
    write_summary(run, store.records(), read_scores(run), metrics, store.read_manifest())


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# For a command a test interrupts with SIGINT: a process started in the background by a shell
# (`cmd &`, as CI runners and nohup may start pytest) inherits SIGINT ignored, and Python then
# never raises KeyboardInterrupt; the child gets the default back, as a terminal's Ctrl-C finds it.
INTERRUPTIBLE = {"preexec_fn": _sigint_default}


# The harness tests' shared pieces: the shipped test double, a two-by-two task, a run's records.
SCRIPTED = "ivbench.testing:Scripted"
TWO_BY_TWO = [["Hello there.", "How are you?"], ["What time is it?", "Thanks."]]


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """The test's folder as the working directory (the CLI writes `run/` there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read_records(out: Path) -> list[dict]:
    """A run directory's records, in file order."""
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]
