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
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..sampling.decode import Decoder, Row, StopMatcher
from ..sampling.engine import Engine, SamplingParams
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
    """One choice of a request as asked: its index, sampling params and stop strings (its row: ``row``)."""

    def __init__(self, index: int, params: SamplingParams, stops: list[str], byte_mode: bool = False) -> None:
        self.index, self.params, self.stops = index, params, list(stops)
        StopMatcher(self.stops)  # validates
        self.row: Row | None = None  # the decode loop's row, once admitted

    @property
    def done(self) -> bool:
        return self.row is not None and self.row.done


class Job:
    """A request: its prompt, choices, limits, and the queue of events for the HTTP side."""

    def __init__(self, prompt: np.ndarray, max_tokens: int, choices: list[Choice], deadline: float) -> None:
        self.prompt, self.max_tokens, self.choices, self.deadline = prompt, max_tokens, choices, deadline
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
    """Owns one decode loop over one engine (one model version) and the thread that steps it."""

    def __init__(self, model: LoadedModel, capacity: int, max_queue: int, metrics=None, name: str = "",
                 prime_chunk: int = 256, flush_every: float = 0.02) -> None:
        self.model, self.capacity, self.max_queue = model, capacity, max_queue
        self.metrics, self.name = metrics, name
        self.prime_chunk, self.flush_every = prime_chunk, flush_every
        self.burst, self.max_burst, self.burst_seconds = 1, 64, 0.01
        self.engine = Engine(model.config, model.weights, capacity=capacity)
        vocab = model.vocab  # a word vocabulary's tokens hold several characters: max_tokens counts characters
        self.decoder = Decoder(self.engine, vocab, text=True, token_chars=None if vocab.plain else vocab.char_lengths()[1:])
        self.end = None if vocab.end_token is None else vocab.end_token - 1  # 0-based: a document's end stops a row
        self.pending: deque[Job] = deque()
        self.active: list[Job] = []
        self.max_batch_seen = 0
        self.steps = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_flush = 0.0

    def warm(self) -> None:
        """Run every kernel a request may take once, so that they are compiled (or loaded) before the first."""
        if self.engine.backend == "numba":
            from ..sampling.warm import warm_up
            warm_up()

    # -- the HTTP side -------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise ShuttingDown
            if len(self.pending) >= self.max_queue and (self.pending or len(job.choices) > self.engine.free):
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
        return self.capacity - self.engine.free

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
                self.decoder.prime(self.prime_chunk)
                self._step()
            except Exception as exc:  # an engine failure ends the running requests, not the server
                self._fail_all(f"internal error in the sampling engine: {type(exc).__name__}: {exc}")
            self._flush()
        self._fail_all(SHUTDOWN)

    def _admit(self) -> None:
        while self.pending and (self.pending[0].cancelled or len(self.pending[0].choices) <= self.engine.free):
            job = self.pending.popleft()
            if job.cancelled:
                self._finish_job(job, [])
                continue
            rows = self.decoder.add(job.prompt, [c.params for c in job.choices], job.max_tokens,
                                    job.choices[0].stops if job.choices else (), stop_token=self.end)
            for c, row in zip(job.choices, rows):
                c.row = row
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

    def _step(self) -> None:
        """Advance every generating row: one step with logprobs, else a burst sized to take ``burst_seconds``."""
        n = len(self.decoder.running())
        if not n:
            return
        t0 = time.perf_counter()
        steps = self.decoder.step(self.burst)
        elapsed = time.perf_counter() - t0
        if not steps:
            return
        # size the next burst to take about `burst_seconds`: new requests join within that
        self.burst = max(2, min(self.max_burst, int(self.burst_seconds * steps / max(elapsed, 1e-6))))
        self.steps += steps
        self.max_batch_seen = max(self.max_batch_seen, n)
        if self.metrics is not None:
            self.metrics.step(n, elapsed / steps)

    def _flush(self) -> None:
        """Hand each row's decoded output (stop strings applied) to the event loop, in coalesced pieces."""
        now = time.monotonic()
        # with many rows, fewer and larger pieces: the HTTP side's cost is per piece, not per character
        interval = min(0.2, max(self.flush_every, 0.0025 * self.rows))
        periodic = now - self._last_flush >= interval
        if periodic:
            self._last_flush = now
        wake: list[Job] = []
        for job in list(self.active):
            events = []
            for c in job.choices:
                row = c.row
                first = row.emitted == 0 and row.chars > 0
                if row.pending and (periodic or row.done or first) or (row.done and row.slot >= 0):
                    events.append(self._emit(row))
            if all(c.done for c in job.choices):
                self._release(job)
                self._finish_job(job, events)
                continue
            if events and job.push(events):
                wake.append(job)
        self._notify(wake)

    def _emit(self, row: Row) -> Event:
        text, lps = self.decoder.take(row)  # a finished or stopped row leaves the batch here
        if self.metrics is not None:
            self.metrics.characters(self.name, len(text))
        return Event(row.index, text, lps, row.finish_reason)

    def _release(self, job: Job) -> None:
        self.decoder.remove([c.row for c in job.choices if c.row is not None])
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
