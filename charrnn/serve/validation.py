"""Checking a completion request's JSON body field by field, with OpenAI's error semantics.

The sampling fields are checked against the same ranges as the command line and the Python API
(:mod:`charrnn.sampling.options`); the server's own limits (:class:`~.options.Settings`) narrow them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidInput
from ..sampling.options import (LENGTH, LOGPROBS, NUM_SAMPLES, SEED, TEMPERATURE, TOP_K, TOP_P, check_range,
                                SampleOptions, check_stops, check_text, show_value)
from ..options import Range
from .options import Settings

DEFAULT_MAX_TOKENS = 200
# OpenAI fields this server accepts only at their neutral value
NEUTRAL = {"presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "best_of": (1,), "suffix": ("",),
           "logit_bias": ({},)}
IGNORED = {"user"}
KNOWN = {"model", "prompt", "start_text", "max_tokens", "length", "temperature", "top_p", "top_k", "n", "stop",
         "seed", "logprobs", "echo", "stream", "stream_options"} | set(NEUTRAL) | IGNORED


@dataclass
class CompletionRequest:
    model: str | None = None
    prompt: str = ""
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = SampleOptions.temperature  # (the sampling defaults are the CLI's)
    top_p: float = SampleOptions.top_p
    top_k: int = SampleOptions.top_k
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int = 0
    echo: bool = False
    stream: bool = False
    include_usage: bool = False


def _int(body: dict, key: str, span: Range, limit: int | None = None) -> int:
    """An integer field (JSON's 3.0 counts as 3) in ``span``, and at most the server's ``limit``."""
    v = body[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    check_range(key, v, span, integer=True)
    if limit is not None and v > limit:
        raise InvalidInput(key, f"must be at most {limit} on this server (got {v})")
    return v


def _number(body: dict, key: str, span: Range) -> float:
    return float(check_range(key, body[key], span))


def _bool(body: dict, key: str) -> bool:
    v = body[key]
    if not isinstance(v, bool):
        raise InvalidInput(key, f"must be true or false (got {show_value(v)})")
    return v


def _alias(body: dict, name: str, alias: str) -> None:
    if alias in body:
        if name in body and body[name] is not None:
            raise InvalidInput(alias, f"is an alias of {name}: give one of them")
        body[name] = body.pop(alias)


def parse_completion(body: object, limits: Settings) -> CompletionRequest:
    """A validated request; raises :class:`InvalidInput` naming the first bad field (as the client spelled it)."""
    if not isinstance(body, dict):
        raise InvalidInput(None, "the request body must be a JSON object")
    body = dict(body)
    spelled = {name: alias for name, alias in (("prompt", "start_text"), ("max_tokens", "length")) if alias in body}
    _alias(body, "prompt", "start_text")
    _alias(body, "max_tokens", "length")
    try:
        return _parse(_known(body), limits)
    except InvalidInput as exc:
        if exc.field in spelled:
            raise InvalidInput(spelled[exc.field], exc.problem) from None
        raise


def _known(body: dict) -> dict:
    """The fields that matter: unknown ones are refused, neutral and ignored ones dropped, null means unset."""
    for key in body:
        if key not in KNOWN:
            raise InvalidInput(key, "is not a known field")
    for key, neutral in NEUTRAL.items():
        if body.get(key) is not None and body[key] not in neutral:
            raise InvalidInput(key, f"is not supported (only {neutral[0]!r})")
    return {k: v for k, v in body.items() if v is not None and k not in NEUTRAL and k not in IGNORED}


def _parse(body: dict, limits: Settings) -> CompletionRequest:
    req = CompletionRequest(max_tokens=min(DEFAULT_MAX_TOKENS, limits.max_tokens))
    if "model" in body:
        if not isinstance(body["model"], str):
            raise InvalidInput("model", f"must be a string (got {show_value(body['model'])})")
        req.model = check_text("model", body["model"])
    if "prompt" in body:
        req.prompt = _prompt(body["prompt"], limits.max_prompt)
    if "max_tokens" in body:
        req.max_tokens = _int(body, "max_tokens", LENGTH, limits.max_tokens)
    if "temperature" in body:
        req.temperature = _number(body, "temperature", TEMPERATURE)
    if "top_p" in body:
        req.top_p = _number(body, "top_p", TOP_P)
    if "top_k" in body:
        req.top_k = _int(body, "top_k", TOP_K)
    if "n" in body:
        req.n = _int(body, "n", NUM_SAMPLES, limits.max_batch)
    if "stop" in body:
        s = body["stop"]
        if not isinstance(s, (str, list)):
            raise InvalidInput("stop", "must be a string or a list of strings")
        req.stop = check_stops([s] if isinstance(s, str) else s)
    if "seed" in body:
        req.seed = _int(body, "seed", SEED)
    if "logprobs" in body:
        req.logprobs = _int(body, "logprobs", LOGPROBS)
    for flag in ("echo", "stream"):
        if flag in body:
            setattr(req, flag, _bool(body, flag))
    if "stream_options" in body:
        req.include_usage = _stream_options(body["stream_options"], req.stream)
    return req


def _prompt(p: object, max_prompt: int) -> str:
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if not isinstance(p, str):
        raise InvalidInput("prompt", "must be a string (or a list of one string)")
    if len(p) > max_prompt:
        raise InvalidInput("prompt", f"is too long: {len(p)} characters, the limit is {max_prompt}")
    return check_text("prompt", p)


def _stream_options(so: object, stream: bool) -> bool:
    if not isinstance(so, dict) or set(so) - {"include_usage"}:
        raise InvalidInput("stream_options", "must be an object with only include_usage")
    if not stream:
        raise InvalidInput("stream_options", "is only allowed with stream: true")
    if "include_usage" in so and not isinstance(so["include_usage"], bool):
        raise InvalidInput("stream_options", "include_usage must be true or false")
    return bool(so.get("include_usage", False))
