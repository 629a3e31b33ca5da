"""Continuous batching: one thread per loaded model steps every open row of one engine together.

Requests join between steps and leave the moment they finish, stop, time out or are cancelled
(a client that went away). Prompts are primed in chunks so that running streams keep flowing;
a request with ``n`` choices primes one row and copies its state into the others. Output goes
to the event loop in coalesced pieces: a row's first characters at once, then every
``flush_every`` seconds (2.5 ms per open row with many rows, at most 0.2 s), so that the HTTP
side never paces the engine.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..sampling.engine import Engine, SamplingParams
from ..sampling.sampler import StopMatcher
from .models import LoadedModel


SHUTDOWN = "shutdown"


class ShuttingDown(Exception):
    """The server is stopping: no new work."""


class QueueFull(Exception):
    """The waiting queue is at its limit: the request is rejected (429), never left hanging."""


@dataclass
class Event:
    """A piece of one choice's output, as the HTTP side receives it."""

    index: int
    text: str = ""
    logprobs: list = field(default_factory=list)  # one entry per token: (token text, logprob, {top text: lp})
    finish_reason: str | None = None
    error: str | None = None  # "timeout", "shutdown" or an internal error message


class Choice:
    """One row of the batch: a choice of a request, with its slot, stop matcher and pending output."""

    def __init__(self, index: int, params: SamplingParams, stops: list[str], byte_mode: bool) -> None:
        self.index, self.params = index, params
        self.slot = -1
        self.produced = 0
        self.matcher = StopMatcher(stops)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace") if byte_mode else None
        self.pending: list[int] = []
        self.pending_lp: list = []
        self.started = False  # generating (primed, or no prompt)
        self.first = True     # the next token is the first without a prompt
        self.done = False
        self.ended = False  # the model produced its end-of-document token


class Job:
    """A request: its prompt, choices, limits, and the queue of events for the HTTP side."""

    def __init__(self, prompt: np.ndarray, max_tokens: int, choices: list[Choice], deadline: float) -> None:
        self.prompt, self.max_tokens, self.choices, self.deadline = prompt, max_tokens, choices, deadline
        self.primed = 0
        self.cancelled = False
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.outbox: list[Event] = []
        self.lock = threading.Lock()
        self.finished = False  # every choice is done (set by the engine thread)
        self.submitted = time.monotonic()

    def push(self, events: list[Event]) -> bool:
        """Engine thread: queue events; True when the event loop needs waking."""
        with self.lock:
            was_empty = not self.outbox
            self.outbox.extend(events)
        return was_empty

    async def events(self):
        """HTTP side: batches of events until every choice has finished."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            with self.lock:
                batch, self.outbox = self.outbox, []
            if batch:
                yield batch
            if self.finished and not self.outbox:
                return


def _wake_all(jobs: list[Job]) -> None:
    for job in jobs:
        job.wake.set()


class Batcher:
    """Owns one engine (one model version) and the thread that steps it."""

    def __init__(self, model: LoadedModel, capacity: int, max_queue: int, metrics=None, name: str = "",
                 prime_chunk: int = 256, flush_every: float = 0.02) -> None:
        self.model, self.capacity, self.max_queue = model, capacity, max_queue
        self.metrics, self.name = metrics, name
        self.prime_chunk, self.flush_every = prime_chunk, flush_every
        self.burst, self.max_burst, self.burst_seconds = 1, 64, 0.01
        self.engine = Engine(model.config, model.weights, capacity=capacity)
        self.vocab = model.vocab
        self.values = np.array(model.vocab.tokens if model.vocab.plain else [0])  # token value by 0-based id
        self.byte_mode = model.vocab.byte_mode
        self.end = None if model.vocab.end_token is None else model.vocab.end_token - 1  # 0-based: ends a completion
        self.pending: deque[Job] = deque()
        self.active: list[Job] = []
        self.free = capacity
        self.max_batch_seen = 0
        self.steps = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_flush = 0.0

    def warm(self) -> None:
        """One throw-away step, so that compiled kernels are ready before the first request."""
        slot = self.engine.open(SamplingParams(logprobs=1))
        self.engine.prime(slot, np.zeros(2, np.int64))
        self.engine.sample(np.array([slot]))
        self.engine.feed(np.array([slot]), np.zeros(1, np.int64))
        self.engine.first(np.array([slot]))
        self.engine.close(slot)

    # -- the HTTP side -------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise ShuttingDown
            if len(self.pending) >= self.max_queue and (self.pending or len(job.choices) > self.free):
                raise QueueFull
            self.pending.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"charrnn-engine-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        with self._cond:
            self._cond.notify()

    @property
    def rows(self) -> int:
        return self.capacity - self.free

    @property
    def idle(self) -> bool:
        return not self.pending and not self.active

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the engine thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self.active and not self.pending:
                    self._cond.wait(timeout=1.0)
                if self._stopping:
                    break
                self._admit()
            self._retire()
            if not self.active:
                continue
            try:
                self._prime()
                self._step()
            except Exception as exc:  # an engine failure ends the running requests, not the server
                self._fail_all(f"internal error in the sampling engine: {type(exc).__name__}: {exc}")
            self._flush()
        self._fail_all(SHUTDOWN)

    def _admit(self) -> None:
        while self.pending and (self.pending[0].cancelled or len(self.pending[0].choices) <= self.free):
            job = self.pending.popleft()
            if job.cancelled:
                self._finish_job(job, [])
                continue
            for c in job.choices:
                c.slot = self.engine.open(c.params)
            self.free -= len(job.choices)
            if not len(job.prompt):
                for c in job.choices:
                    c.started = True
            self.active.append(job)

    def _retire(self) -> None:
        """Drop cancelled and timed-out jobs at once, freeing their rows."""
        now = time.monotonic()
        for job in list(self.active):
            if job.cancelled:
                self._release(job)
                self._finish_job(job, [])
            elif now > job.deadline:
                events = [Event(c.index, error="timeout") for c in job.choices if not c.done]
                self._release(job)
                self._finish_job(job, events)
        with self._cond:
            for job in list(self.pending):
                if now > job.deadline or job.cancelled:
                    self.pending.remove(job)
                    self._finish_job(job, [] if job.cancelled else [Event(c.index, error="timeout") for c in job.choices])

    def _prime(self) -> None:
        """Feed the next ``prime_chunk`` prompt characters of every row still reading its prompt."""
        for j in self.active:
            if j.primed >= len(j.prompt):
                continue
            head = j.choices[0]
            chunk = j.prompt[j.primed:j.primed + self.prime_chunk]
            self.engine.prime(head.slot, chunk)
            j.primed += len(chunk)
            if j.primed == len(j.prompt):
                for c in j.choices[1:]:
                    self.engine.copy_state(head.slot, c.slot)
                for c in j.choices:
                    c.started, c.first = True, False

    def _step(self) -> None:
        """Advance every generating row: a single step for first tokens and logprobs, else a burst of steps."""
        rows = [(j, c) for j in self.active for c in j.choices if c.started and not c.done]
        if not rows:
            return
        t0 = time.perf_counter()
        firsts = [r for r in rows if r[1].first]
        if firsts:  # a first character without a prompt: drawn uniformly, then read by the model
            toks = self.engine.first(np.array([c.slot for _, c in firsts]))
            self._record(firsts, toks, [None] * len(firsts))
            rows = [r for r in rows if not r[1].first and not r[1].done]
        if not rows:
            return
        slots = np.array([c.slot for _, c in rows])
        left = min(job.max_tokens - c.produced for job, c in rows)
        if not any(c.params.logprobs for _, c in rows):
            steps = min(self.burst, left)
            tokens = self.engine.generate(slots, steps)  # sample and feed, steps times, in one call
            for (job, c), row in zip(rows, tokens):
                row = row.tolist()
                if self.end is not None and self.end in row:  # the end of a document: stop before it
                    row, c.ended = row[:row.index(self.end)], True
                c.pending.extend(row)
                c.produced += steps
                c.done = c.ended or c.produced >= job.max_tokens
        else:
            steps = 1
            out = self.engine.sample(slots)
            toks, lps = out if isinstance(out, tuple) else (out, [None] * len(rows))
            self._record(rows, toks, lps)
        elapsed = time.perf_counter() - t0
        # size the next burst to take about `burst_seconds`: new requests join within that
        self.burst = max(1, min(self.max_burst, int(self.burst_seconds * steps / max(elapsed, 1e-6))))
        self.steps += steps
        self.max_batch_seen = max(self.max_batch_seen, len(rows))
        if self.metrics is not None:
            self.metrics.step(len(rows), elapsed / steps)

    def _record(self, rows: list, tokens, lps: list) -> None:
        """One sampled token per row: keep it, and feed it back unless the row is done."""
        feed_slots, feed_tokens = [], []
        for (job, c), tok, lp in zip(rows, tokens, lps):
            tok = int(tok)
            c.first = False
            if tok == self.end:  # the end of a document: the completion stops, without the token
                c.done = c.ended = True
                continue
            c.pending.append(tok)
            if c.params.logprobs:
                c.pending_lp.append((tok, lp))
            c.produced += 1
            if c.produced >= job.max_tokens:
                c.done = True
            else:
                feed_slots.append(c.slot)
                feed_tokens.append(tok)
        if feed_slots:
            self.engine.feed(np.array(feed_slots), np.array(feed_tokens))

    def _flush(self) -> None:
        """Decode pending tokens, apply stop strings, and hand the pieces to the event loop."""
        now = time.monotonic()
        # with many rows, fewer and larger pieces: the HTTP side's cost is per piece, not per character
        interval = min(0.2, max(self.flush_every, 0.0025 * (self.capacity - self.free)))
        periodic = now - self._last_flush >= interval
        if periodic:
            self._last_flush = now
        wake: list[Job] = []
        for job in list(self.active):
            events = []
            for c in job.choices:
                if (c.pending or c.ended) and (periodic or c.done or c.produced == len(c.pending)):
                    events.append(self._emit(c))
                if c.done and c.slot >= 0:  # a finished or stopped row leaves the batch at once
                    self._close(c)
            if all(c.done for c in job.choices):
                self._release(job)
                self._finish_job(job, events)
                continue
            if events and job.push(events):
                wake.append(job)
        self._notify(wake)

    def _emit(self, c: Choice) -> Event:
        ids = np.array(c.pending, dtype=np.int64)
        if self.byte_mode:
            text = c.decoder.decode(self.values[ids].astype(np.uint8).tobytes(), final=c.done)
        elif not self.vocab.plain:
            text = self.vocab.decode(ids.astype(np.int64) + 1)
        else:
            text = self.values[ids].astype(np.uint32).tobytes().decode("utf-32-le")
        out = c.matcher.push(text)
        lps = c.pending_lp
        c.pending, c.pending_lp = [], []
        if c.matcher.stopped:
            c.done = True
            event = Event(c.index, out, lps[:len(out)] if not self.byte_mode else lps, "stop")
        elif c.done:
            out += c.matcher.flush()
            event = Event(c.index, out, lps, "stop" if c.ended else "length")
        else:
            event = Event(c.index, out, lps[:len(out)] if not self.byte_mode and c.matcher.pending else lps)
            if c.matcher.pending and not self.byte_mode:
                c.pending_lp = lps[len(out):]  # held-back characters keep their logprobs for later
        if self.metrics is not None:
            self.metrics.characters(self.name, len(out))
        return event

    def _close(self, c: Choice) -> None:
        self.engine.close(c.slot)
        c.slot = -1
        self.free += 1

    def _release(self, job: Job) -> None:
        for c in job.choices:
            if c.slot >= 0:
                self._close(c)
            c.done = True
        if job in self.active:
            self.active.remove(job)

    def _finish_job(self, job: Job, events: list[Event]) -> None:
        job.push(events)
        job.finished = True
        self._notify([job])

    def _fail_all(self, message: str) -> None:
        for job in list(self.active):
            self._release(job)
            self._finish_job(job, [Event(c.index, error=message) for c in job.choices])
        with self._cond:
            while self.pending:
                job = self.pending.popleft()
                self._finish_job(job, [Event(c.index, error=message) for c in job.choices])

    @staticmethod
    def _notify(jobs: list[Job]) -> None:
        by_loop: dict = {}
        for job in jobs:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_wake_all, group)
            except RuntimeError:  # that event loop has closed: nobody is listening any more
                pass
