"""The API key check, in front of every route."""

from __future__ import annotations

import hmac

from .errors import ApiError


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
