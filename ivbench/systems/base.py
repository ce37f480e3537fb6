"""The system API: what a thing under test implements (docs/architecture.md, "Words").

    system = MySystem(**options)   # cheap: store options, import nothing heavy
    system.load(device)            # heavy work once: weights, sessions, warm caches
    session = system.new_session() # one dialogue; keeps its own history
    for event in session.respond(turn_input): ...   # AudioChunk / TextDelta / StageMark
    session.close(); system.close()

Yield audio as soon as it exists, as mono float32 numpy arrays on the CPU: the runner's
clock stamps an event when it is yielded, so GPU work must be finished by then.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar
from collections.abc import Iterator

from ..types import Mode, ReplyEvent, TurnInput


class Session(ABC):
    """One dialogue with a system."""

    @abstractmethod
    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        """Yield reply events for one user turn, then return."""

    def close(self) -> None:
        """Free what the session holds."""


class System(ABC):
    """A system under test. Subclasses declare `modes` and implement `new_session`."""

    modes: ClassVar[tuple[Mode, ...]] = (Mode.S2S,)
    # True for random-weight models that are only good for latency profiling: reports
    # label them and never show their content scores as results. A class default a system may
    # set per instance (groupformer: random init, or a checkpoint saved from random weights).
    untrained: bool = False

    def __init__(self, **options: Any) -> None:
        self.options = options

    def load(self, device: str) -> None:
        """Load weights and warm what can be warmed; `device` is "cpu" or "cuda"."""

    @abstractmethod
    def new_session(self) -> Session:
        """Start one dialogue."""

    def close(self) -> None:
        """Free what `load` took."""

    def describe(self) -> dict[str, Any]:
        """Identity for the manifest: model names, versions, options."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}",
                "options": self.options}

    def supported_modes(self) -> tuple[Mode, ...]:
        return tuple(Mode.parse(m) for m in self.modes)
