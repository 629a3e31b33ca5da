"""Shaping a job's events into OpenAI's response objects: choices, logprobs, usage, whole or in chunks."""

from __future__ import annotations

import time
import uuid

from .batcher import Event, Job
from .validation import CompletionRequest


def _token_text(vocab, token: int) -> str:
    if not vocab.byte_mode:
        return vocab.token_text(token + 1)
    value = vocab.tokens[token]
    return chr(value) if value < 128 else f"bytes:\\x{value:02x}"


class LogprobWriter:
    """OpenAI's legacy ``logprobs`` object for one choice, built piece by piece."""

    def __init__(self, vocab) -> None:
        self.vocab, self.offset = vocab, 0

    def piece(self, entries: list, prompt_text: str = "") -> dict:
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for ch in prompt_text:
            self._add(out, ch, None, None)
        for token, step in entries:
            if step is None:  # a first character drawn without a prompt: uniform, not from the model
                self._add(out, _token_text(self.vocab, token), None, None)
                continue
            self._add(out, _token_text(self.vocab, token), float(step.logprob),
                      {_token_text(self.vocab, t): float(v) for t, v in step.top})
        return out

    def _add(self, out: dict, text: str, lp, top) -> None:
        out["tokens"].append(text)
        out["token_logprobs"].append(lp)
        out["top_logprobs"].append(top)
        out["text_offset"].append(self.offset)
        self.offset += len(text)


class Completion:
    """Turns a job's events into OpenAI response objects (streamed chunks or one reply)."""

    def __init__(self, name: str, req: CompletionRequest, job: Job, vocab) -> None:
        self.name, self.req, self.job, self.vocab = name, req, job, vocab
        self.id, self.created = "cmpl-" + uuid.uuid4().hex, int(time.time())
        self.writers = [LogprobWriter(vocab) for _ in range(req.n)]
        self.completion_tokens = 0

    def chunk(self, choices: list[dict], usage: dict | None = None) -> dict:
        body = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.name,
                "choices": choices}
        if self.req.include_usage:
            body["usage"] = usage
        return body

    def choice(self, index: int, text: str, entries: list, finish: str | None, prompt_text: str = "") -> dict:
        lp = self.writers[index].piece(entries, prompt_text) if self.req.logprobs else None
        return {"index": index, "text": prompt_text + text, "logprobs": lp, "finish_reason": finish}

    def count(self, events: list[Event]) -> None:
        self.completion_tokens += sum(len(e.logprobs) if self.req.logprobs else len(e.text) for e in events)

    def usage(self) -> dict:
        p = len(self.job.prompt)
        return {"prompt_tokens": p, "completion_tokens": self.completion_tokens,
                "total_tokens": p + self.completion_tokens}


def merge(events: list[Event]) -> list[Event]:
    """One event per choice: a chunk names each choice once."""
    merged: dict[int, Event] = {}
    for e in events:
        if e.index in merged:
            m = merged[e.index]
            merged[e.index] = Event(e.index, m.text + e.text, m.logprobs + e.logprobs, e.finish_reason or m.finish_reason)
        else:
            merged[e.index] = e
    return list(merged.values())
