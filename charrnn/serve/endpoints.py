"""The endpoints: completions (whole or streamed), models, health, metrics, the page and its dashboard's data."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from ..errors import CharRNNError
from .batcher import Batcher, QueueFull, ShuttingDown
from .errors import ApiError, event_error, from_charrnn, internal_error, shutting_down
from .intake import make_job, read_json
from .responses import Completion
from .runs import find_runs, snapshot
from .server import Server
from .sse import stream
from .validation import parse_completion

STATIC = Path(__file__).parent / "static"


async def completions(request: Request) -> Response:
    server: Server = request.app.state.server
    status = 200
    name = "?"
    try:
        body = await read_json(request, server.settings.max_body)
        try:
            req = parse_completion(body, server.settings)
        except CharRNNError as exc:
            raise from_charrnn(exc) from None
        served = server.model(req.model)
        name = served.name
        if served.follows:
            batcher = await asyncio.to_thread(server.batcher, served)
        else:
            batcher = server.batcher(served)
        job = make_job(server.settings, req, batcher)
        try:
            batcher.submit(job)
        except ShuttingDown:
            raise shutting_down() from None
        except QueueFull:
            server.metrics.reject("queue_full")
            raise ApiError(429, f"the server is busy: {server.settings.max_queue} requests are already waiting; "
                                "retry shortly", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        out = Completion(served.name, req, job, batcher.model.vocab)
        if req.stream:
            return StreamingResponse(stream(server, batcher, out), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await reply(request, server, batcher, out)
    except ApiError as exc:
        status = exc.status
        if exc.status in (400, 404, 413):
            server.metrics.reject({400: "invalid", 404: "unknown_model", 413: "too_large"}[exc.status])
        return exc.response()
    except Exception as exc:  # a bug: an error object for this request, the server keeps running
        status = 500
        server.log(f"internal error: {type(exc).__name__}: {exc}")
        return internal_error(exc).response()
    finally:
        server.metrics.requests.labels(name, str(status)).inc()


async def reply(request: Request, server: Server, batcher: Batcher, out: Completion) -> Response:
    """A whole (non-streamed) completion; a client that goes away cancels its rows."""
    texts = [out.req.prompt if out.req.echo else "" for _ in range(out.req.n)]
    entries: list[list] = [[] for _ in range(out.req.n)]
    finish: list[str | None] = [None] * out.req.n

    async def collect() -> ApiError | None:
        async for events in out.job.events():
            out.count(events)
            for e in events:
                if e.error:
                    return event_error(server.settings, e)
                texts[e.index] += e.text
                entries[e.index] += e.logprobs
                finish[e.index] = e.finish_reason or finish[e.index]
        return None

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, gone = asyncio.ensure_future(collect()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()
        batcher.cancel(out.job)
        return Response(status_code=499)
    error = work.result()
    if error is not None:
        batcher.cancel(out.job)
        return error.response()
    prompt_text = out.req.prompt if out.req.echo else ""
    choices = [out.choice(j, texts[j][len(prompt_text):], entries[j], finish[j], prompt_text) for j in range(out.req.n)]
    body = {"id": out.id, "object": "text_completion", "created": out.created, "model": out.name,
            "choices": choices, "usage": out.usage()}
    return JSONResponse(body)


async def list_models(request: Request) -> Response:
    server: Server = request.app.state.server
    for m in server.models.values():
        await asyncio.to_thread(m.latest)
    return JSONResponse({"object": "list", "data": [m.describe() for m in server.models.values()]})


async def model_info(request: Request) -> Response:
    server: Server = request.app.state.server
    try:
        served = server.model(request.path_params["name"])
    except ApiError as exc:
        return exc.response()
    await asyncio.to_thread(served.latest)
    return JSONResponse(served.describe())


async def health_endpoint(request: Request) -> Response:
    server: Server = request.app.state.server
    return JSONResponse({"status": "ok", "models": list(server.models)})


async def metrics_endpoint(request: Request) -> Response:
    data, content_type = request.app.state.server.metrics.render()
    return Response(data, media_type=content_type)


async def settings_endpoint(request: Request) -> Response:
    server: Server = request.app.state.server
    s = server.settings
    return JSONResponse({"models": [m.describe() for m in server.models.values()], "max_tokens": s.max_tokens,
                         "max_batch": s.max_batch, "max_prompt": s.max_prompt, "auth": s.api_key is not None})


async def runs_endpoint(request: Request) -> Response:
    server: Server = request.app.state.server
    found = await asyncio.to_thread(find_runs, server.run_sources)
    return JSONResponse({"runs": [{"name": name, "path": str(path)} for name, path in found.items()]})


async def run_stats(request: Request) -> Response:
    server: Server = request.app.state.server
    name = request.query_params.get("name", "")
    try:
        offset = max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        return ApiError(400, "offset must be an integer", param="offset").response()
    found = await asyncio.to_thread(find_runs, server.run_sources)
    if name not in found:
        return ApiError(404, f"no run named {name!r}", param="name", code="run_not_found").response()
    return JSONResponse(await asyncio.to_thread(snapshot, found[name], offset))


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
