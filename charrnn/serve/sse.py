"""Server-sent events: a streamed completion as ``data:`` chunks, then ``[DONE]``."""

from __future__ import annotations

import json

from .batcher import Batcher
from .errors import event_error, internal_error
from .responses import Completion, merge


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def stream(server, batcher: Batcher, out: Completion):
    """Server-sent events: one chunk per piece of each choice, then ``[DONE]``."""
    try:
        async for piece in _stream_events(server.settings, out):
            yield piece
    except Exception as exc:  # a bug mid-stream: an error chunk, then [DONE]
        server.log(f"internal error while streaming: {type(exc).__name__}: {exc}")
        yield sse(internal_error(exc).body())
        yield sse("[DONE]")
    finally:  # also when the client went away: free the rows at once
        batcher.cancel(out.job)


async def _stream_events(settings, out: Completion):
    """The chunks of one completion: echo, the pieces of each choice, usage, [DONE]."""
    if out.req.echo:
        yield sse(out.chunk([out.choice(j, "", [], None, out.req.prompt) for j in range(out.req.n)]))
    async for events in out.job.events():
        out.count(events)
        errors = [e for e in events if e.error]
        if errors:
            yield sse(event_error(settings, errors[0]).body())
            break
        choices = [out.choice(e.index, e.text, e.logprobs, e.finish_reason) for e in merge(events)
                   if e.text or e.finish_reason]
        if choices:
            yield sse(out.chunk(choices))
    else:
        if out.req.include_usage:
            yield sse(out.chunk([], out.usage()))
    yield sse("[DONE]")
