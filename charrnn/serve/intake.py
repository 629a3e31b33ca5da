"""Reading a completion request: the body within its size limit, its JSON, and the batch job it asks for."""

from __future__ import annotations

import json
import time

from starlette.requests import Request

from ..errors import CharRNNError
from ..sampling.engine import SamplingParams
from ..sampling.options import row_seed
from .batcher import Batcher, Choice, Job
from .errors import ApiError
from .options import Settings
from .validation import CompletionRequest


async def read_json(request: Request, limit: int) -> object:
    """The parsed body; 413 past ``limit`` bytes (declared or streamed), 400 for anything but JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({str(exc)[:100]})", code="invalid_json") from None


def make_job(settings: Settings, req: CompletionRequest, batcher: Batcher) -> Job:
    """The rows of a request: choice j draws with seed + j."""
    vocab = batcher.model.vocab
    try:
        prompt = vocab.encode(req.prompt) - 1 if req.prompt else vocab.encode("")
    except CharRNNError as exc:
        raise ApiError(400, f"prompt has {exc}", param="prompt", code="invalid_value") from None
    choices = []
    for j in range(req.n):
        params = SamplingParams(req.temperature, req.top_k, req.top_p, row_seed(req.seed, j), req.logprobs)
        choices.append(Choice(j, params, req.stop, vocab.byte_mode))
    return Job(prompt, req.max_tokens, choices, time.monotonic() + settings.request_timeout)
