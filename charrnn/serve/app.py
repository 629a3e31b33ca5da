"""The ASGI application: OpenAI-compatible completions, models, health, metrics, the page and its dashboard.

Every request carries all it needs (model, prompt, parameters, seed; the dashboard's byte offset),
so several replicas behind a load balancer serve the same API; the only state is the running batch.
By concern: :mod:`.options` (settings), :mod:`.errors`, :mod:`.intake` and :mod:`.validation`
(request parsing), :mod:`.responses` (response shaping), :mod:`.sse`, :mod:`.endpoints`,
:mod:`.middleware`, :mod:`.server` (models and batchers), :mod:`.batcher` (the running batch).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .export_page import export_page
from .endpoints import (STATIC, completions, health_endpoint, index, list_models, metrics_endpoint, model_info,
                        run_stats, runs_endpoint, settings_endpoint)
from .middleware import ApiKeyMiddleware
from .options import Settings
from .server import Server


def create_app(checkpoints: list[str | Path], runs: list[str | Path] = (), *,
               log: Callable[[str], None] = print, **settings) -> Starlette:
    """The ASGI app serving ``checkpoints`` (files, or directories to follow) and the runs' dashboards.

    ``settings``: the fields of :class:`~charrnn.serve.options.Settings` (``api_key``, ``cors_origins``,
    ``max_batch``, ``max_queue``, ``max_tokens``, ``max_prompt``, ``request_timeout``), each with its
    default there. Mount the app in another application or run it under any ASGI server. Raises
    :class:`CharRNNError` for a checkpoint it cannot load or a setting out of range.
    """
    s = Settings(**settings)
    server = Server(list(checkpoints), list(runs), s, log)
    middleware = [Middleware(ApiKeyMiddleware, key=s.api_key)]
    if s.cors_origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(s.cors_origins),
                                        allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    routes = [
        Route("/", index), Route("/health", health_endpoint), Route("/metrics", metrics_endpoint),
        Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", list_models),
        Route("/v1/models/{name:path}/export.html", export_page), Route("/v1/models/{name:path}", model_info),
        Route("/api/settings", settings_endpoint), Route("/api/runs", runs_endpoint), Route("/api/run", run_stats),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app):
        yield
        server.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.server = server
    return app
