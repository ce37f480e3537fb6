"""The runner's clock measures a known injected delay (docs/architecture.md, "Latency, one definition")."""
import time

import numpy as np
import pytest

from ivbench.runner.clock import time_turn
from ivbench.systems import Session, System
from ivbench.types import AudioChunk, Mode, TextDelta, TurnInput

SR = 16000
TOLERANCE_MS = 5.0  # sleep overshoot plus thread wake-up on a busy 2-core machine


class ScheduledSession(Session):
    """Text after 30 ms, first audio after 50 ms, second audio after 100 ms, end at 110 ms."""

    def respond(self, turn):
        time.sleep(0.030)
        yield TextDelta("hello ")
        time.sleep(0.020)
        yield AudioChunk(np.zeros(SR, dtype=np.float32), SR)  # 1.0 s of audio
        time.sleep(0.050)
        yield AudioChunk(np.zeros(SR, dtype=np.float32), SR)  # 1.0 s more
        time.sleep(0.010)


class Scheduled(System):
    modes = (Mode.T2S,)

    def new_session(self):
        return ScheduledSession()


def _turn():
    return TurnInput(mode=Mode.T2S, text="hi")


def test_time_turn_measures_injected_delays():
    timing = time_turn(ScheduledSession(), _turn(), timeout_s=5)
    assert timing.error is None
    stamps_ms = [ns / 1e6 for ns, _ in timing.events]
    for measured, injected in zip(stamps_ms, (30, 50, 100)):
        assert injected <= measured <= injected + TOLERANCE_MS, (stamps_ms, injected)
    assert 110 <= timing.end_ns / 1e6 <= 110 + TOLERANCE_MS


def test_record_latency_fields_and_rtf(tmp_path):
    from conftest import write_task

    from ivbench.config import EvalConfig, SystemConfig
    from ivbench.registry import Spec, parse_spec
    from ivbench.runner import run_eval

    task = write_task(tmp_path / "task", [["one", "two"], ["three"]])
    config = EvalConfig(task=parse_spec(str(task)),
                        systems=[SystemConfig(Spec(f"{__file__}:Scheduled"), "scheduled")],
                        out=tmp_path / "run", warmup=1, seed=0)
    result = run_eval(config, progress=False)
    records = result.records
    assert len(records) == 3 and all(r.ok for r in records)
    for r in records:
        assert 30 <= r.first_text_ms <= 30 + TOLERANCE_MS
        assert 50 <= r.first_audio_ms <= 50 + TOLERANCE_MS
        assert 110 <= r.end_ms <= 110 + TOLERANCE_MS
        assert r.reply_duration_s == pytest.approx(2.0)
        # compute time / audio duration = 0.110 s / 2.0 s
        assert r.rtf == pytest.approx(r.end_ms / 1000 / 2.0)
        assert 0.055 <= r.rtf <= 0.055 + TOLERANCE_MS / 2000
        assert [e[0] for e in r.events] == ["text", "audio", "audio"]


def test_timeout_abandons_a_hung_turn_quickly():
    class Hung(Session):
        def respond(self, turn):
            time.sleep(5)
            yield TextDelta("late")

    start = time.monotonic()
    timing = time_turn(Hung(), _turn(), timeout_s=0.2)
    assert timing.timed_out and timing.error["type"] == "TimeoutError"
    assert time.monotonic() - start < 1.0
