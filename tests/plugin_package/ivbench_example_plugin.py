"""An example ivbench plugin: `Echo` answers each user turn with its own text, transformed.

Installing this package registers it under the name ``example-echo`` through the
``ivbench.systems`` entry point group, so ``ivbench eval --system example-echo`` finds it.
Options: ``style`` ("upper" or "reverse").

Like any plugin, importing it is cheap: it imports only ivbench's light API modules.
"""
from __future__ import annotations

from collections.abc import Iterator

from ivbench.systems import Session, System
from ivbench.types import Mode, ReplyEvent, StageMark, TextDelta, TurnInput

STYLES = ("upper", "reverse")


def transform(text: str, style: str) -> str:
    return text.upper() if style == "upper" else text[::-1]


class EchoSession(Session):
    def __init__(self, style: str) -> None:
        self.style = style
        self.turns = 0  # its own history: how many turns it has answered

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        self.turns += 1
        if turn.mode.speech_in:
            # No speech recogniser here: it checks that it was given audio and answers the script.
            if turn.audio is None or len(turn.audio.samples) == 0:
                raise ValueError("speech-input turn without audio")
            yield StageMark("heard")
        reply = transform(turn.text, self.style)
        middle = len(reply) // 2
        yield TextDelta(reply[:middle])
        yield TextDelta(reply[middle:])


class Echo(System):
    """Replies with the user's text uppercased (style="upper") or reversed (style="reverse")."""

    modes = (Mode.T2T, Mode.S2T)

    def __init__(self, style: str = "upper") -> None:
        if style not in STYLES:
            raise ValueError(f"example-echo: style {style!r} is not one of {', '.join(STYLES)}")
        super().__init__(style=style)
        self.style = style

    def new_session(self) -> EchoSession:
        return EchoSession(self.style)


from ivbench.metrics.base import FieldInfo, Metric, MetricResult, Need  # noqa: E402


class ReplyWords(Metric):
    """A third-party metric: how many words each reply's text has."""

    name = "example-words"
    needs = frozenset({Need.REPLY_TEXT})
    fields = {"words": FieldInfo(None, "words", "words in the reply text")}

    def cache_inputs(self, item):
        return {"text": item.record.reply_text}

    def score(self, items):
        return [MetricResult({"words": float(len(item.record.reply_text.split()))}) for item in items]
