"""Drives tasks' dialogues through systems, owning the clock."""
from .clock import TurnTiming, time_turn
from .runner import EvalResult, run_eval

__all__ = ["EvalResult", "TurnTiming", "run_eval", "time_turn"]
