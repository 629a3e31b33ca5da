"""Every option of ``charrnn serve`` and :func:`charrnn.serve.create_app`, defined once (no starlette needed).

:class:`Settings` holds what the app needs (limits, key, origins); :class:`ServeOptions` adds what
only the command line has (where to listen, what to serve). The command line builds its flags from
both (``cli.options_of``), ``create_app(**settings)`` takes the same names and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import NON_NEGATIVE, POSITIVE, Range, check_fields, option


@dataclass
class Settings:
    """The limits and access rules of one app."""

    api_key: str | None = option(None, "Require 'Authorization: Bearer KEY' on the API [env: CHARRNN_API_KEY].")
    cors_origins: tuple[str, ...] = option((), "Allow browser pages from this origin. Repeatable.", kind="multiple",
                                           flag="--cors-origin")
    max_batch: int = option(64, "Rows generated together.", range=POSITIVE)
    max_queue: int = option(256, "Requests waiting for a row; beyond it: 429.", range=NON_NEGATIVE)
    max_tokens: int = option(10_000, "Longest completion.", range=POSITIVE)
    max_prompt: int = option(10_000, "Longest prompt (characters).", range=POSITIVE)
    request_timeout: float = option(120.0, "Seconds per request.", range=POSITIVE)

    def __post_init__(self) -> None:
        self.cors_origins = tuple(self.cors_origins)
        check_fields(self)

    @property
    def max_body(self) -> int:
        """Bytes a request body may have: the longest prompt in 4-byte characters, JSON-escaped, and room."""
        return 64 * 1024 + 12 * self.max_prompt


@dataclass
class ServeOptions:
    """What only ``charrnn serve`` has: the models, the runs, the address."""

    checkpoints: tuple[str, ...] = option(
        (), "A checkpoint (.pt or .t7), or a directory: its newest, followed as training writes more. Repeatable.",
        kind="multiple", flag="--checkpoint")
    runs: tuple[str, ...] = option(
        (), "Training runs for the dashboard: checkpoint directories or prefixes (cv/checkpoint). Repeatable.",
        kind="multiple")
    host: str = option("127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
    port: int = option(8080, "0 = any free port.", range=Range(0, 65535))
