"""The one decode loop: prime with the prompt, then score -> pick -> feed, row by row, until each row ends.

Every way of sampling runs on it: the CLI and the Python API (:class:`charrnn.sampling.Sampler`),
samples during training (``sample_from_model``) and the server's continuous batching
(:class:`charrnn.serve.batcher.Batcher`). It drives a *scorer*, the CPU engine
(:class:`charrnn.sampling.engine.Engine`) or the PyTorch model
(:class:`charrnn.sampling.torch_scorer.TorchScorer`); both give each row its own parameters and
random stream, so a row's text depends only on its prompt, parameters and seed.

A row ends when it has produced ``max_chars`` characters (``finish_reason`` "length"), at its
``stop_token`` (an end-of-document token id; "stop", the token not emitted) or before the first of
its stop strings ("stop"). Characters are counted on the decoded text, so a token may stand for
several characters: ``token_chars`` (characters per 0-based id) says how many; the last token of
a row is cut to fit. Logprobs are kept per token and assume one character per token.
"""

from __future__ import annotations

import codecs
from enum import Enum
from typing import Sequence

import numpy as np

from .engine import SamplingParams, Slots
from .options import MAX_STOPS, check_stops  # noqa: F401 (MAX_STOPS: part of this module's API)
from ..vocab import Vocabulary



class StopMatcher:
    """Cuts a stream of text (or bytes) before the first occurrence of any stop string.

    ``push(piece)`` returns what may be emitted now; a tail that could begin a stop string is held
    back until it is decided. ``stopped`` turns true when a stop string was found (nothing after
    it is ever emitted); ``flush()`` returns the held-back tail at the end of the stream.
    """

    def __init__(self, stops: Sequence[str | bytes] = ()) -> None:
        stops = check_stops(stops)
        self.stops, self.stopped = stops, False
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending: str | bytes = ""

    def push(self, piece: str | bytes) -> str | bytes:
        """What of ``pending + piece`` can be emitted now."""
        text = self.pending + piece if self.pending else piece
        if self.stopped:
            return piece[:0]
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.pending = True, text[:0]
            return text[:cut]
        keep = min(self.hold, len(text))
        self.pending = text[len(text) - keep:]
        return text[:len(text) - keep]

    def flush(self) -> str | bytes:
        """The held-back tail once the stream has ended without a stop."""
        out, self.pending = self.pending, self.pending[:0]
        return out


class RowState(Enum):
    PROMPT = "prompt"    # reading its prompt (or waiting for the row of its group that reads it)
    FIRST = "first"      # no prompt: the next token is drawn uniformly, as torch-rnn does
    RUNNING = "running"  # generating
    DONE = "done"        # finished; ``finish_reason`` says why


class Row:
    """One output stream: its slot, its limits, and the tokens not yet handed out."""

    def __init__(self, index: int, params: SamplingParams, max_chars: int, matcher, stop_token: int | None,
                 utf8: bool) -> None:
        self.index, self.params, self.max_chars, self.stop_token = index, params, max_chars, stop_token
        self.matcher = matcher
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace") if utf8 else None
        self.slot = -1
        self.state = RowState.PROMPT
        self.finish_reason: str | None = None
        self.chars = 0         # characters produced (decoded), the limit counts these
        self.emitted = 0       # characters passed on to the stop matcher
        self.pending: list[int] = []
        self.pending_lp: list = []

    @property
    def done(self) -> bool:
        return self.state is RowState.DONE

    def finish(self, reason: str) -> None:
        if self.state is not RowState.DONE:
            self.state, self.finish_reason = RowState.DONE, reason


class Group:
    """Rows that share a prompt: the first row reads it, the others copy its state."""

    def __init__(self, prompt: np.ndarray, rows: list[Row]) -> None:
        self.prompt, self.rows, self.primed = prompt, rows, 0


class Decoder:
    """Runs rows of one scorer: ``add`` them, then ``prime``, ``step`` and ``take`` until they are done."""

    def __init__(self, scorer: Slots, vocab: Vocabulary, text: bool = False,
                 token_chars: np.ndarray | None = None) -> None:
        self.scorer, self.vocab = scorer, vocab
        self.utf8 = text and vocab.byte_mode  # bytes vocabulary, text wanted: decode UTF-8 incrementally
        self.values = np.array(vocab.tokens)  # token value by 0-based id
        self.token_chars = np.ones(len(vocab), np.int64) if token_chars is None else np.asarray(token_chars)
        self.groups: list[Group] = []

    # -- rows ----------------------------------------------------------------------------------
    def add(self, prompt: np.ndarray, params: Sequence[SamplingParams], max_chars: int, stops: Sequence = (),
            stop_token: int | None = None) -> list[Row]:
        """Open one row per ``params`` on ``prompt`` (0-based ids); the caller checks that slots are free."""
        rows = [Row(j, p, max_chars, StopMatcher(stops), stop_token, self.utf8) for j, p in enumerate(params)]
        for row in rows:
            row.slot = self.scorer.open(row.params)
            if not len(prompt):
                row.state = RowState.FIRST
        self.groups.append(Group(np.asarray(prompt, np.int64), rows))
        return rows

    def remove(self, rows: Sequence[Row], reason: str = "cancelled") -> None:
        """Close rows at once (cancelled, timed out, or done and read)."""
        for row in rows:
            row.finish(reason)
            if row.slot >= 0:
                self.scorer.close(row.slot)
                row.slot = -1
        self.groups = [g for g in self.groups if any(r.slot >= 0 for r in g.rows)]

    def running(self) -> list[Row]:
        return [r for g in self.groups for r in g.rows if r.state in (RowState.FIRST, RowState.RUNNING)]

    # -- the loop ------------------------------------------------------------------------------
    def prime(self, chunk: int | None = None) -> None:
        """Feed the next ``chunk`` prompt tokens (all of them: None) of every group still reading its prompt."""
        for g in self.groups:
            head = g.rows[0]
            if head.state is not RowState.PROMPT or head.slot < 0:
                continue
            part = g.prompt[g.primed:] if chunk is None else g.prompt[g.primed:g.primed + chunk]
            self.scorer.prime(head.slot, part)
            g.primed += len(part)
            if g.primed == len(g.prompt):
                for row in g.rows:
                    if row.slot >= 0 and row.state is RowState.PROMPT:
                        if row is not head:
                            self.scorer.copy_state(head.slot, row.slot)
                        row.state = RowState.RUNNING

    def step(self, steps: int = 1) -> int:
        """Advance every generating row by up to ``steps`` tokens (one with logprobs); returns the steps taken."""
        rows = self.running()
        firsts = [r for r in rows if r.state is RowState.FIRST]
        taken = 0
        if firsts:  # a first character without a prompt: drawn uniformly, then read by the model
            tokens = self.scorer.first(np.array([r.slot for r in firsts]))
            self._record(firsts, tokens[:, None], [[None]] * len(firsts))
            self._feed(firsts, tokens)
            steps, taken = steps - 1, 1
        rows = [r for r in rows if r.state is RowState.RUNNING]
        if not rows or steps < 1:
            return taken
        slots = np.array([r.slot for r in rows])
        if any(r.params.logprobs for r in rows):
            out = self.scorer.sample(slots)
            tokens, lps = out if isinstance(out, tuple) else (out, [None] * len(rows))
            self._record(rows, tokens[:, None], [[lp] for lp in lps])
            self._feed(rows, tokens)
            return taken + 1
        steps = min(steps, min(r.max_chars - r.chars for r in rows))  # every token is at least one character
        self._record(rows, self.scorer.generate(slots, steps), None)  # sample and feed, steps times
        return taken + steps

    def _record(self, rows: list[Row], tokens: np.ndarray, lps: list | None) -> None:
        """Keep each row's new tokens, up to its stop token and its character limit."""
        for j, row in enumerate(rows):
            new = tokens[j]
            if row.stop_token is not None and (hit := np.flatnonzero(new == row.stop_token)).size:
                new = new[:hit[0]]
                row.finish("stop")
            chars = int(self.token_chars[new].sum())
            row.pending.extend(new.tolist())
            if row.params.logprobs and lps is not None:
                row.pending_lp.extend((int(t), lp) for t, lp in zip(new, lps[j]))
            row.chars += chars
            if row.chars >= row.max_chars:
                row.finish("length")
            elif not row.done:
                row.state = RowState.RUNNING

    def _feed(self, rows: list[Row], tokens: np.ndarray) -> None:
        """Feed a single drawn token back into the rows that go on."""
        go = [j for j, r in enumerate(rows) if not r.done]
        if go:
            self.scorer.feed(np.array([rows[j].slot for j in go]), tokens[go])

    # -- output --------------------------------------------------------------------------------
    def take(self, row: Row) -> tuple[str | bytes, list]:
        """The row's output since the last call (stop strings applied) and its logprobs; closes a finished row."""
        ids, lps = np.array(row.pending, np.int64), row.pending_lp
        row.pending, row.pending_lp = [], []
        raw = self.vocab.decode(ids + 1)
        raw = raw[:max(0, row.max_chars - row.emitted)]  # the last token may hold more than the limit
        row.emitted += len(raw)
        text = row.decoder.decode(raw, final=row.done) if row.decoder is not None else raw
        out = row.matcher.push(text)
        byte_mode = self.vocab.byte_mode
        if row.matcher.stopped:  # within the limit: a stop string wins over "length"
            row.state, row.finish_reason = RowState.DONE, "stop"
            lps = lps if byte_mode else lps[:len(out)]
        elif row.done:
            out += row.matcher.flush()
        elif row.matcher.pending and not byte_mode:
            row.pending_lp, lps = lps[len(out):], lps[:len(out)]  # held-back characters keep their logprobs
        if row.done:
            self.remove([row], row.finish_reason)
        return out, lps
