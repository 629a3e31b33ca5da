"""Stop strings over streamed text: emit what cannot start a stop, hold back what might."""

from __future__ import annotations


class StopMatcher:
    """Feed text pieces; get back the text safe to emit, and whether a stop string was reached."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        """The text of ``piece`` (after any held-back text) that can be emitted now."""
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        text = self.held + piece
        cut = min((at for at in (text.find(s) for s in self.stops) if at >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.held = True, ""
            return text[:cut]
        keep = 0  # the longest suffix of text that is a proper prefix of some stop
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:k]):
                    keep = k
                    break
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """At the end of generation: the held-back text was not a stop after all."""
        out, self.held = ("" if self.stopped else self.held), ""
        return out
