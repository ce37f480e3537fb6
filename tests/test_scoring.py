"""The scoring phase: batching, caching (byte-identical re-score), missing values, summaries."""
import csv
import json
import shutil
from pathlib import Path


from ivbench.config import EvalConfig, SystemConfig
from ivbench.registry import Spec, parse_spec
from ivbench.runner import run_eval
from ivbench.scoring import ScoreConfig, score_run

PLUGINS = Path(__file__).resolve().parent / "plugins"
# Copied into each test's folder and loaded by path: each test has its own module, so its own
# count of the batches Length computed (scoring_metrics.CALLS).
METRICS = PLUGINS / "scoring_metrics.py"
SYSTEM = PLUGINS / "doubler.py"


def _run(tmp_path, modes=("t2t",), systems=((2, "two"), (3, "three"))):
    task_dir = tmp_path / "task"
    task_dir.mkdir(exist_ok=True)
    (task_dir / "t.jsonl").write_text(
        json.dumps({"id": "a", "turns": [{"text": "hi", "reference": "x"}, "hello there"]}) + "\n"
        + json.dumps({"id": "b", "turns": ["good morning", "bye"]}) + "\n"
        + json.dumps({"id": "c", "turns": ["one more"]}) + "\n")
    shutil.copy(SYSTEM, tmp_path / "doubler.py")
    shutil.copy(METRICS, tmp_path / "metrics.py")
    config = EvalConfig(task=parse_spec(str(task_dir / "t.jsonl")),
                        systems=[SystemConfig(Spec(f"{tmp_path}/doubler.py:Doubler", (("times", t),)), label)
                                 for t, label in systems],
                        modes=list(modes), out=tmp_path / "run", warmup=0)
    run_eval(config, progress=False)
    return tmp_path / "run"


def _metrics(tmp_path, *names):
    return [parse_spec(f"{tmp_path}/metrics.py:{n}") for n in names]


def test_rescore_from_cache_is_byte_identical_and_computes_nothing(tmp_path):
    run = _run(tmp_path)
    config = ScoreConfig(metrics=_metrics(tmp_path, "Length") + [parse_spec("latency")], cache_dir=tmp_path / "c")
    outcome = score_run(run, config, progress=False)
    first = (run / "scores.jsonl").read_bytes()
    summary = (run / "summary.csv").read_bytes()
    module = outcome.metrics[f"{tmp_path}/metrics.py:Length"]
    calls = __import__(type(module).__module__).CALLS
    assert sum(calls) == 10  # 2 systems × 5 turns, computed once
    score_run(run, config, progress=False)
    assert sum(calls) == 10  # all from cache
    assert (run / "scores.jsonl").read_bytes() == first
    assert (run / "summary.csv").read_bytes() == summary
    score_run(run, ScoreConfig(metrics=config.metrics, cache_dir=tmp_path / "c", use_cache=False), progress=False)
    assert sum(calls) == 20 and (run / "scores.jsonl").read_bytes() == first


def test_missing_values_are_missing_with_a_reason_never_zero(tmp_path):
    run = _run(tmp_path)
    config = ScoreConfig(metrics=_metrics(tmp_path, "NeedsReference", "Broken"), cache_dir=tmp_path / "c")
    rows = score_run(run, config, progress=False).rows
    by = {(r.metric.rsplit(":", 1)[1], r.system, r.dialogue_id, r.turn_index): r.result for r in rows}
    with_ref = by[("NeedsReference", "two", "a", 0)]
    assert with_ref.status == "ok" and with_ref.values["chars"] == len("hi hi")
    no_ref = by[("NeedsReference", "two", "a", 1)]
    assert no_ref.status == "not_applicable" and no_ref.values["chars"] is None and "reference" in no_ref.reason
    broken = by[("Broken", "two", "b", 0)]
    assert broken.status == "missing" and broken.values["chars"] is None
    assert "something-absent" in broken.reason
    summary = {(r["system"], r["metric"].rsplit(":", 1)[1], r["field"]): r
               for r in csv.DictReader((run / "summary.csv").read_text().splitlines())}
    assert summary[("two", "NeedsReference", "chars")]["n"] == "1"
    assert summary[("two", "NeedsReference", "chars")]["missing"] == "4"
    assert summary[("two", "Broken", "chars")]["mean"] == ""  # missing, not 0


def test_summary_confidence_intervals_and_pairwise_tests(tmp_path):
    run = _run(tmp_path)
    score_run(run, ScoreConfig(metrics=_metrics(tmp_path, "Length"), cache_dir=tmp_path / "c"), progress=False)
    summary = {(r["system"], r["field"]): r for r in csv.DictReader((run / "summary.csv").read_text().splitlines())}
    texts = ["hi", "hello there", "good morning", "bye", "one more"]
    mean_two = sum(len(" ".join([t] * 2)) for t in texts) / 5
    row = summary[("two", "chars")]
    assert float(row["mean"]) == mean_two
    assert float(row["ci_low"]) <= mean_two <= float(row["ci_high"])
    pairwise = list(csv.DictReader((run / "pairwise.csv").read_text().splitlines()))
    assert len(pairwise) == 1 and pairwise[0]["system_a"] == "three" and pairwise[0]["system_b"] == "two"
    expected = sum(len(t) + 1 for t in texts) / 5  # the third copy adds len(t) + a space
    assert float(pairwise[0]["mean_difference"]) == expected and int(pairwise[0]["n"]) == 5


def test_crossmodal_gap_for_a_system_run_in_two_modes(tmp_path):
    run = _run(tmp_path, modes=("s2t", "t2t"), systems=((2, "two"),))
    score_run(run, ScoreConfig(metrics=_metrics(tmp_path, "Length"), cache_dir=tmp_path / "c"), progress=False)
    rows = list(csv.DictReader((run / "crossmodal.csv").read_text().splitlines()))
    assert len(rows) == 1 and rows[0]["system"] == "two"
    assert float(rows[0]["s2t"]) == float(rows[0]["t2t"])  # Doubler answers the script either way
    assert rows[0]["s2s"] == "" and rows[0]["gap_s2t_minus_s2s"] == ""  # s2s not run: missing, not 0


def test_a_metric_option_nobody_takes_stops_scoring_before_any_work(tmp_path):
    """`asr_wer:backend=openai-whisper` used to run faster-whisper without a word."""
    import pytest

    from ivbench.errors import PluginError

    run = _run(tmp_path)
    for spec in ("asr_wer:backend=openai-whisper", "dnsmos:invented=1", "transcript:beam=5"):
        with pytest.raises(PluginError):
            score_run(run, ScoreConfig(metrics=[parse_spec(spec)], cache_dir=tmp_path / "c"), progress=False)
        assert not (run / "scores.jsonl").exists()


def test_transcripts_do_not_depend_on_which_replies_are_scored_together(tmp_path):
    """What `ivbench score` after `ivbench eval` needs: a reply recomputed on its own (its
    neighbours read from the cache) gets the transcript it got among them, so scores.jsonl
    comes out byte for byte the same. (Packed windows failed this: a packed transcript
    depends on the replies that shared its window.)"""
    import sqlite3

    from ivbench.cache import content_key
    from ivbench.metrics.base import ScoreItem
    from ivbench.scoring import plan_metrics

    task_dir = tmp_path / "task"
    task_dir.mkdir()
    texts = ["Could you tell me how to get to the train station?", "My sister is coming to visit us next weekend.",
             "Please remember to turn off the lights before you leave.", "She plays the piano every evening."]
    (task_dir / "t.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "turns": [t]}) + "\n"
                                              for i, t in enumerate(texts)))
    run_eval(EvalConfig(task=parse_spec(str(task_dir / "t.jsonl")), modes=["t2s"], out=tmp_path / "run", warmup=0,
                        systems=[SystemConfig(parse_spec("parrot"), "parrot")]), progress=False)
    run = tmp_path / "run"
    config = ScoreConfig(metrics=[parse_spec("asr_wer")], cache_dir=tmp_path / "c")
    score_run(run, config, progress=False)
    first = (run / "scores.jsonl").read_bytes()
    # forget the transcripts of two replies: the next score computes those two alone
    transcript = dict(plan_metrics([parse_spec("asr_wer")]))["transcript"]
    from ivbench.store import RunStore

    items = [ScoreItem(r, run) for r in RunStore(run).records()][:2]
    keys = [content_key("metric", transcript.identity(), transcript.cache_inputs(i)) for i in items]
    with sqlite3.connect(tmp_path / "c" / "scores.sqlite") as db:
        assert sum(db.execute("DELETE FROM cache WHERE key = ?", (k,)).rowcount for k in keys) == 2
    score_run(run, config, progress=False)
    assert (run / "scores.jsonl").read_bytes() == first


def test_a_missing_audio_file_fails_its_turn_not_the_run(tmp_path):
    """A run copied without one of its WAVs: the metrics that hash audio for their cache key
    (dnsmos, transcript) used to crash the whole score with FileNotFoundError (a traceback);
    now that turn fails with the file named, and the other turns are scored."""
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    (task_dir / "t.jsonl").write_text(json.dumps({"id": "d0", "turns": ["Hello there.", "Good morning."]}) + "\n")
    run_eval(EvalConfig(task=parse_spec(str(task_dir / "t.jsonl")), modes=["t2s"], out=tmp_path / "run", warmup=0,
                        systems=[SystemConfig(parse_spec("ivbench.testing:Scripted:audio_s=1.0"), "s")]),
             progress=False)
    run = tmp_path / "run"
    gone = run / json.loads((run / "records.jsonl").read_text().splitlines()[1])["reply_audio"]
    gone.unlink()
    rows = score_run(run, ScoreConfig(metrics=[parse_spec("dnsmos"), parse_spec("transcript")],
                                      cache_dir=tmp_path / "c"), progress=False).rows
    by = {(r.metric, r.turn_index): r.result for r in rows}
    for metric in ("dnsmos", "transcript"):
        assert by[(metric, 0)].status == "ok", by[(metric, 0)]
        assert by[(metric, 1)].status == "failed" and str(gone.name) in by[(metric, 1)].reason, by[(metric, 1)]
        # named by its place in the run, so the failure reads the same wherever the run lies
        assert str(tmp_path) not in by[(metric, 1)].reason and "(in the run directory)" in by[(metric, 1)].reason


def test_a_metric_named_twice_is_scored_once(tmp_path):
    """`--metrics latency,latency` wrote every row twice: n doubled in summary.csv, a narrower CI."""
    run = _run(tmp_path)
    config = ScoreConfig(metrics=[parse_spec("latency"), parse_spec("latency")], cache_dir=tmp_path / "c")
    rows = score_run(run, config, progress=False).rows
    assert len(rows) == 10  # 2 systems × 5 turns
    summary = {(r["system"], r["field"]): r for r in csv.DictReader((run / "summary.csv").read_text().splitlines())}
    assert summary[("two", "end_ms")]["n"] == "5"


def test_a_read_only_run_directory_is_an_error_before_any_work(tmp_path):
    """A run on a read-only copy (a share mounted read-only): scoring ended in a traceback
    (OSError on scores.jsonl.tmp) after all its work. (Root writes anywhere: the check is then
    made by hand, e.g. `setpriv --reuid=65534`, or on a read-only mount.)"""
    import os

    import pytest

    from ivbench.errors import RunDirError

    if os.geteuid() == 0:
        pytest.skip("root may write into a folder without write permission")
    run = _run(tmp_path)
    config = ScoreConfig(metrics=_metrics(tmp_path, "Length"), cache_dir=tmp_path / "c")
    run.chmod(0o555)
    try:
        with pytest.raises(RunDirError, match="cannot write scores.jsonl and summary.csv here"):
            score_run(run, config, progress=False)
    finally:
        run.chmod(0o755)
    assert not (run / "scores.jsonl").exists()


def test_a_score_with_fewer_metrics_says_which_results_it_drops(tmp_path):
    """`ivbench score RUN --metrics utmos` after eval's defaults writes only utmos: the judge's
    results (paid for, and not in this machine's cache when the run was scored elsewhere) went
    without a word."""
    run = _run(tmp_path)
    said: list[str] = []
    both = ScoreConfig(metrics=_metrics(tmp_path, "Length") + [parse_spec("latency")], cache_dir=tmp_path / "c")
    score_run(run, both, progress=False, echo=said.append)
    assert not any("no longer holds" in line for line in said), said
    score_run(run, ScoreConfig(metrics=[parse_spec("latency")], cache_dir=tmp_path / "c"), progress=False,
              echo=said.append)
    assert said == [f"note: {run}/scores.jsonl no longer holds {tmp_path}/metrics.py:Length (scored before, not "
                    "asked for now); name them in --metrics too to keep them (read from the cache where it has them)"]


def test_a_cache_folder_that_cannot_be_made_is_a_user_error(tmp_path):
    """IVBENCH_CACHE_DIR / --cache-dir under a file (or read-only): a FileNotFoundError or
    sqlite3.OperationalError traceback; --no-cache scores without it."""
    import pytest

    from ivbench.errors import ConfigError

    run = _run(tmp_path)
    (tmp_path / "afile").write_text("x")
    config = ScoreConfig(metrics=_metrics(tmp_path, "Length"), cache_dir=tmp_path / "afile" / "cache")
    with pytest.raises(ConfigError, match=r"cache .*afile/cache/scores.sqlite: cannot be opened .*--no-cache"):
        score_run(run, config, progress=False)
    config.use_cache = False
    assert len(score_run(run, config, progress=False).rows) == 10
