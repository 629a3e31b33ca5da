"""The ASGI application: OpenAI-compatible completions, models, health, metrics, the page and its dashboard.

Every request carries all it needs (model, prompt, parameters, seed; the dashboard's byte offset),
so several replicas behind a load balancer serve the same API; the only state is the running batch.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..sampling.engine import SamplingParams
from ..errors import CharRNNError, InvalidInput
from .batcher import SHUTDOWN, Batcher, Choice, Event, Job, QueueFull, ShuttingDown
from .metrics import Metrics
from .models import ServedModel, model_names
from .runs import find_runs, snapshot
from .validation import CompletionRequest, Limits, parse_completion

STATIC = Path(__file__).parent / "static"


@dataclass
class Settings:
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_batch: int = 64
    max_queue: int = 256
    max_tokens: int = 10_000
    max_prompt: int = 10_000
    request_timeout: float = 120.0

    @property
    def max_body(self) -> int:
        """Bytes a request body may have: the longest prompt in 4-byte characters, JSON-escaped, and room."""
        return 64 * 1024 + 12 * self.max_prompt


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _from_charrnn(exc: CharRNNError, param: str | None = None) -> ApiError:
    if isinstance(exc, InvalidInput):
        return ApiError(exc.http_status, exc.api_message(), exc.kind, exc.param, "invalid_value")
    return ApiError(exc.http_status, str(exc), exc.kind, param, None)


class Server:
    """The models, their batchers, the limits and the metrics behind one app."""

    def __init__(self, checkpoints: list[str | Path], runs: list[str | Path], settings: Settings,
                 log: Callable[[str], None]) -> None:
        if not checkpoints:
            raise CharRNNError("serve needs at least one --checkpoint")
        self.settings, self.log = settings, log
        self.limits = Limits(settings.max_tokens, settings.max_prompt, settings.max_batch)
        self.models = {name: ServedModel(name, src, log) for name, src in zip(model_names(checkpoints), checkpoints)}
        # the directories of the served checkpoints are runs too: training into cv/ shows up live
        self.run_sources = list(runs) + [m.source if m.follows else m.source.parent for m in self.models.values()]
        self.batchers: dict[str, list[Batcher]] = {name: [] for name in self.models}
        self.metrics = Metrics(list(self.models), self.rows, self.queued)
        for served in self.models.values():  # load and warm each engine now, not on the first request
            self.batcher(served)

    def rows(self, name: str) -> int:
        return sum(b.rows for b in self.batchers[name])

    def queued(self, name: str) -> int:
        return sum(len(b.pending) for b in self.batchers[name])

    def model(self, name: str | None) -> ServedModel:
        if name is None or name == "":
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ApiError(400, f"model is required: this server has {', '.join(self.models)}", param="model",
                           code="invalid_value")
        if name not in self.models:
            raise ApiError(404, f"model {name!r} does not exist; this server has {', '.join(self.models)}",
                           param="model", code="model_not_found")
        return self.models[name]

    def batcher(self, served: ServedModel) -> Batcher:
        """The batcher of the newest version; older versions finish their rows and then stop."""
        loaded = served.latest()
        group = self.batchers[served.name]
        if not group or group[-1].model is not loaded:
            s = self.settings
            group.append(Batcher(loaded, s.max_batch, s.max_queue, self.metrics, served.name))
            group[-1].warm()
        for old in group[:-1]:
            if old.idle:
                old.stop()
                group.remove(old)
        return group[-1]

    def close(self) -> None:
        for group in self.batchers.values():
            for b in group:
                b.stop()


# -- completions ----------------------------------------------------------------------------------
async def read_json(request: Request, limit: int) -> object:
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


def make_job(server: Server, req: CompletionRequest, batcher: Batcher) -> Job:
    vocab = batcher.model.vocab
    try:
        prompt = vocab.encode(req.prompt) - 1 if req.prompt else vocab.encode("")
    except CharRNNError as exc:
        raise ApiError(400, f"prompt has {exc}", param="prompt", code="invalid_value") from None
    choices = []
    for j in range(req.n):
        seed = None if req.seed is None else req.seed + j
        params = SamplingParams(req.temperature, req.top_k, req.top_p, seed, req.logprobs)
        choices.append(Choice(j, params, req.stop, vocab.byte_mode))
    return Job(prompt, req.max_tokens, choices, time.monotonic() + server.settings.request_timeout)


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


def timeout_error(settings: Settings) -> ApiError:
    return ApiError(408, f"the request did not finish within the server's request timeout "
                         f"({settings.request_timeout:g} s)", "timeout_error", code="request_timeout")


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", "server_error", code="server_shutdown")


def event_error(server: Server, event: Event) -> ApiError:
    if event.error == "timeout":
        return timeout_error(server.settings)
    if event.error == SHUTDOWN:
        return shutting_down()
    return ApiError(500, event.error or "internal error", "server_error", code="internal_error")


async def completions(request: Request) -> Response:
    server: Server = request.app.state.server
    status = 200
    name = "?"
    try:
        body = await read_json(request, server.settings.max_body)
        try:
            req = parse_completion(body, server.limits)
        except CharRNNError as exc:
            raise _from_charrnn(exc) from None
        served = server.model(req.model)
        name = served.name
        if served.follows:
            batcher = await asyncio.to_thread(server.batcher, served)
        else:
            batcher = server.batcher(served)
        job = make_job(server, req, batcher)
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
        return ApiError(500, f"internal error: {type(exc).__name__}", "server_error", code="internal_error").response()
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
                    return event_error(server, e)
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


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def stream(server: Server, batcher: Batcher, out: Completion):
    """Server-sent events: one chunk per piece of each choice, then ``[DONE]``."""
    try:
        async for piece in _stream_events(server, out):
            yield piece
    except Exception as exc:  # a bug mid-stream: an error chunk, then [DONE]
        server.log(f"internal error while streaming: {type(exc).__name__}: {exc}")
        yield sse(ApiError(500, f"internal error: {type(exc).__name__}", "server_error", code="internal_error").body())
        yield sse("[DONE]")
    finally:  # also when the client went away: free the rows at once
        batcher.cancel(out.job)


async def _stream_events(server: Server, out: Completion):
    """The chunks of one completion: echo, the pieces of each choice, usage, [DONE]."""
    if out.req.echo:
        yield sse(out.chunk([out.choice(j, "", [], None, out.req.prompt) for j in range(out.req.n)]))
    async for events in out.job.events():
        out.count(events)
        errors = [e for e in events if e.error]
        if errors:
            yield sse(event_error(server, errors[0]).body())
            break
        choices = [out.choice(e.index, e.text, e.logprobs, e.finish_reason) for e in merge(events)
                   if e.text or e.finish_reason]
        if choices:
            yield sse(out.chunk(choices))
    else:
        if out.req.include_usage:
            yield sse(out.chunk([], out.usage()))
    yield sse("[DONE]")


# -- the other endpoints --------------------------------------------------------------------------
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


class ApiKeyMiddleware:
    """401 for /v1 and /api requests without ``Authorization: Bearer <key>`` (the page and /health stay open)."""

    def __init__(self, app, key: str | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send) -> None:
        if self.key and scope["type"] == "http" and scope["method"] != "OPTIONS" \
                and scope["path"].startswith(("/v1/", "/api/")):
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode("latin-1")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), self.key.encode()):
                message = "missing API key (send Authorization: Bearer <key>)" if not token else "wrong API key"
                err = ApiError(401, message, code="invalid_api_key")
                await err.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(checkpoints: list[str | Path], runs: list[str | Path] = (), *, api_key: str | None = None,
               cors_origins: list[str] = (), max_batch: int = 64, max_queue: int = 256, max_tokens: int = 10_000,
               max_prompt: int = 10_000, request_timeout: float = 120.0,
               log: Callable[[str], None] = print) -> Starlette:
    """The ASGI app serving ``checkpoints`` (files, or directories to follow) and the runs' dashboards.

    Mount it in another application or run it under any ASGI server. Raises :class:`CharRNNError`
    for a checkpoint it cannot load.
    """
    settings = Settings(api_key, list(cors_origins), max_batch, max_queue, max_tokens, max_prompt, request_timeout)
    server = Server(list(checkpoints), list(runs), settings, log)
    middleware = [Middleware(ApiKeyMiddleware, key=api_key)]
    if cors_origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                                        allow_headers=["Authorization", "Content-Type"]))
    routes = [
        Route("/", index), Route("/health", health_endpoint), Route("/metrics", metrics_endpoint),
        Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", list_models),
        Route("/v1/models/{name:path}", model_info),
        Route("/api/settings", settings_endpoint), Route("/api/runs", runs_endpoint), Route("/api/run", run_stats),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        server.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.server = server
    return app
