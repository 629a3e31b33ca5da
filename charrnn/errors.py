"""Typed errors: library code raises them with structured fields; each front end formats them.

The CLI prints ``charrnn: error: <message>`` and exits with ``exit_code``; the HTTP server maps
``http_status`` and ``param`` onto OpenAI's error object. Library code never spells a CLI flag:
an :class:`InvalidInput` names the option by its Python name (``learning_rate``) and each front
end renders it (``--learning-rate`` on the command line, ``learning_rate`` in a JSON body).
"""

from __future__ import annotations

from pathlib import Path


class CharRNNError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1
    http_status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.detail = message
        if exit_code is not None:
            self.exit_code = exit_code

    def cli_message(self) -> str:
        """The message as the command line shows it."""
        return str(self)


class InvalidInput(CharRNNError):
    """An option or request field with a bad value: ``InvalidInput("dropout", "must lie in [0, 1)")``."""

    def __init__(self, field: str | None, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{_flag(field)} {problem}" if field else problem)
        self.detail = problem

    @property
    def param(self) -> str | None:
        return self.field

    def api_message(self) -> str:
        """The message with the field named as in a JSON body."""
        return f"{self.field} {self.problem}" if self.field else self.problem


class CorruptFile(CharRNNError):
    """A file that is unreadable, damaged, foreign, hostile or inconsistent: ``CorruptFile(path, why)``."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path, self.problem = (None if path is None else Path(path)), problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class Diverged(CharRNNError):
    """Training produced non-finite or exploding values at ``iteration``."""

    http_status = 500
    kind = "server_error"

    def __init__(self, iteration: int, message: str) -> None:
        self.iteration = iteration
        super().__init__(message)


class Unsupported(CharRNNError):
    """A valid request that this build, device or file version cannot serve."""


class NotFound(CharRNNError):
    """A named thing (model, checkpoint, split) that does not exist."""

    http_status = 404


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")
