"""The server's errors as OpenAI error objects: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from starlette.responses import JSONResponse

from ..errors import CharRNNError, InvalidInput
from .batcher import SHUTDOWN, Event
from .options import Settings


def printable(text: str | None) -> str | None:
    """``text`` with any lone surrogate escaped, so that an error about one can itself be sent."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


class ApiError(Exception):
    """An error answer: the HTTP status and OpenAI's error object (``param`` names the JSON field)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, printable(message), kind
        self.param, self.code, self.headers = printable(param), code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_charrnn(exc: CharRNNError, param: str | None = None) -> ApiError:
    """A library error as the API shows it: an invalid field is named as the client spelled it."""
    if isinstance(exc, InvalidInput):
        return ApiError(exc.http_status, exc.api_message(), exc.kind, exc.param, "invalid_value")
    return ApiError(exc.http_status, str(exc), exc.kind, param, None)


def internal_error(exc: Exception) -> ApiError:
    return ApiError(500, f"internal error: {type(exc).__name__}", "server_error", code="internal_error")


def timeout_error(settings: Settings) -> ApiError:
    return ApiError(408, f"the request did not finish within the server's request timeout "
                         f"({settings.request_timeout:g} s)", "timeout_error", code="request_timeout")


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", "server_error", code="server_shutdown")


def event_error(settings: Settings, event: Event) -> ApiError:
    """The error a batch row ended with."""
    if event.error == "timeout":
        return timeout_error(settings)
    if event.error == SHUTDOWN:
        return shutting_down()
    return ApiError(500, event.error or "internal error", "server_error", code="internal_error")
