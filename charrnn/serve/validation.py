"""Checking a completion request's JSON body field by field, with OpenAI's error semantics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InvalidInput

MAX_STOPS = 4
MAX_LOGPROBS = 20
DEFAULT_MAX_TOKENS = 200
# OpenAI fields this server accepts only at their neutral value
NEUTRAL = {"presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "best_of": (1,), "suffix": ("",),
           "logit_bias": ({},)}
IGNORED = {"user"}
KNOWN = {"model", "prompt", "start_text", "max_tokens", "length", "temperature", "top_p", "top_k", "n", "stop",
         "seed", "logprobs", "echo", "stream", "stream_options"} | set(NEUTRAL) | IGNORED


@dataclass
class Limits:
    max_tokens: int = 10_000
    max_prompt: int = 10_000
    max_batch: int = 64


@dataclass
class CompletionRequest:
    model: str | None = None
    prompt: str = ""
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int = 0
    echo: bool = False
    stream: bool = False
    include_usage: bool = False


def _int(body: dict, key: str, lo: int, hi: int | None = None) -> int:
    v = body[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidInput(key, f"must be an integer (got {_show(v)})")
    if v < lo or (hi is not None and v > hi):
        raise InvalidInput(key, f"must be between {lo} and {hi} (got {v})" if hi is not None else f"must be at least {lo} (got {v})")
    return v


def _number(body: dict, key: str, lo: float, hi: float, lo_open: bool = False) -> float:
    v = body[key]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise InvalidInput(key, f"must be a number (got {_show(v)})")
    if v < lo or v > hi or (lo_open and v == lo):
        raise InvalidInput(key, f"must lie in {'(' if lo_open else '['}{lo:g}, {hi:g}] (got {v:g})")
    return float(v)


def _bool(body: dict, key: str) -> bool:
    v = body[key]
    if not isinstance(v, bool):
        raise InvalidInput(key, f"must be true or false (got {_show(v)})")
    return v


def _show(v) -> str:
    text = repr(v) if not isinstance(v, str) else '"' + v + '"'
    return text if len(text) <= 40 else text[:37] + "..."


def _alias(body: dict, name: str, alias: str) -> None:
    if alias in body:
        if name in body and body[name] is not None:
            raise InvalidInput(alias, f"is an alias of {name}: give one of them")
        body[name] = body.pop(alias)


def parse_completion(body: object, limits: Limits) -> CompletionRequest:
    """A validated request; raises :class:`InvalidInput` naming the first bad field (as the client spelled it)."""
    if not isinstance(body, dict):
        raise InvalidInput(None, "the request body must be a JSON object")
    body = dict(body)
    spelled = {name: alias for name, alias in (("prompt", "start_text"), ("max_tokens", "length")) if alias in body}
    _alias(body, "prompt", "start_text")
    _alias(body, "max_tokens", "length")
    try:
        return _parse(body, limits)
    except InvalidInput as exc:
        if exc.field in spelled:
            raise InvalidInput(spelled[exc.field], exc.problem) from None
        raise


def _parse(body: dict, limits: Limits) -> CompletionRequest:
    for key in body:
        if key not in KNOWN:
            raise InvalidInput(key, "is not a known field")
    for key, neutral in NEUTRAL.items():
        if body.get(key) is not None and body[key] not in neutral:
            raise InvalidInput(key, f"is not supported (only {neutral[0]!r})")
    body = {k: v for k, v in body.items() if v is not None and k not in NEUTRAL and k not in IGNORED}
    req = CompletionRequest()
    if "model" in body:
        if not isinstance(body["model"], str):
            raise InvalidInput("model", f"must be a string (got {_show(body['model'])})")
        req.model = body["model"]
    if "prompt" in body:
        p = body["prompt"]
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
            p = p[0]
        if not isinstance(p, str):
            raise InvalidInput("prompt", "must be a string (or a list of one string)")
        if len(p) > limits.max_prompt:
            raise InvalidInput("prompt", f"is too long: {len(p)} characters, the limit is {limits.max_prompt}")
        req.prompt = p
    if "max_tokens" in body:
        req.max_tokens = _int(body, "max_tokens", 1, limits.max_tokens)
    elif req.max_tokens > limits.max_tokens:
        req.max_tokens = limits.max_tokens
    if "temperature" in body:
        req.temperature = _number(body, "temperature", 0.0, 10.0)
    if "top_p" in body:
        req.top_p = _number(body, "top_p", 0.0, 1.0, lo_open=True)
    if "top_k" in body:
        req.top_k = _int(body, "top_k", 0)
    if "n" in body:
        req.n = _int(body, "n", 1, limits.max_batch)
    if "stop" in body:
        s = body["stop"]
        stops = [s] if isinstance(s, str) else s
        if not isinstance(stops, list) or not all(isinstance(x, str) for x in stops):
            raise InvalidInput("stop", "must be a string or a list of strings")
        if len(stops) > MAX_STOPS:
            raise InvalidInput("stop", f"may hold at most {MAX_STOPS} strings (got {len(stops)})")
        if any(not x for x in stops):
            raise InvalidInput("stop", "strings must not be empty")
        if any(len(x) > 100 for x in stops):
            raise InvalidInput("stop", "strings may be at most 100 characters long")
        req.stop = stops
    if "seed" in body:
        req.seed = _int(body, "seed", 0, 2**63 - 1)
    if "logprobs" in body:
        req.logprobs = _int(body, "logprobs", 0, MAX_LOGPROBS)
    if "echo" in body:
        req.echo = _bool(body, "echo")
    if "stream" in body:
        req.stream = _bool(body, "stream")
    if "stream_options" in body:
        so = body["stream_options"]
        if not isinstance(so, dict) or set(so) - {"include_usage"}:
            raise InvalidInput("stream_options", "must be an object with only include_usage")
        if not req.stream:
            raise InvalidInput("stream_options", "is only allowed with stream: true")
        if "include_usage" in so:
            if not isinstance(so["include_usage"], bool):
                raise InvalidInput("stream_options", "include_usage must be true or false")
            req.include_usage = so["include_usage"]
    return req
