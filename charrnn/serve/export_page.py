"""``GET /v1/models/{name}/export.html``: the served model as ``charrnn export``'s one-file page, as a download."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from ..export.html import render_page
from ..export.model import ExportModel
from ..sampling.engine import PreparedModel
from .models import LoadedModel


def _page(name: str, m: LoadedModel) -> bytes:
    model = ExportModel(name, m.path, m.config, m.vocab, PreparedModel(m.config, m.weights), m.iteration, m.val_loss)
    return render_page(model).encode("utf-8")


async def export_page(request: Request) -> Response:
    """The page of the model's current checkpoint (a followed directory: its newest)."""
    from .errors import ApiError

    try:
        served = request.app.state.server.model(request.path_params["name"])
    except ApiError as exc:  # 404 for an unknown model
        return exc.response()
    current = await asyncio.to_thread(served.latest)
    body = await asyncio.to_thread(_page, served.name, current)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in served.name) or "model"
    return Response(body, media_type="text/html; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{safe}.html"'})
