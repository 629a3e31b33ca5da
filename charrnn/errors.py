"""Typed errors: library code raises them with structured fields; each front end formats them.

The CLI prints ``charrnn: error: <message>`` and exits with ``exit_code``; the HTTP server maps
``http_status`` and ``param`` onto OpenAI's error object. Library code never spells a CLI flag:
an :class:`InvalidInput` names the option by its Python name (``learning_rate``) and each front
end renders it (``--learning-rate`` on the command line, ``learning_rate`` in a JSON body).
A message that mentions another option as a hint writes :func:`opt` (``opt("init_from")``), which
each front end spells the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

# An option named inside a message: a control character no option name or sane path contains.
_REF = "\x1f"
_REFS = re.compile(f"{_REF}([a-z0-9_]+){_REF}")


def opt(field: str) -> str:
    """A mention of the option ``field`` inside an error message (``--field-name`` on the CLI, as is in JSON)."""
    return f"{_REF}{field}{_REF}"


class CharRNNError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1
    http_status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        self.template = message
        super().__init__(_spell(message, _flag))
        self.detail = _spell(message, str)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def mentions(self) -> tuple[str, ...]:
        """The options the message names (by Python name), in order."""
        return tuple(dict.fromkeys(_REFS.findall(self.template)))

    def cli_message(self) -> str:
        """The message as the command line shows it."""
        return str(self)

    def api_message(self) -> str:
        """The message with options named as in a JSON body."""
        return self.detail


class InvalidInput(CharRNNError):
    """An option or request field with a bad value: ``InvalidInput("dropout", "must lie in [0, 1)")``."""

    def __init__(self, field: str | None, problem: str) -> None:
        self._name((field,) if field else (), problem)

    def _name(self, fields: tuple[str, ...], problem: str) -> None:
        self.fields, self.field = fields, (fields[0] if fields else None)
        named = " and ".join(opt(f) for f in fields)
        CharRNNError.__init__(self, f"{named} {problem}" if named else problem)
        self.problem = _spell(problem, str)  # as a JSON client spells options

    @property
    def param(self) -> str | None:
        return self.field


class Conflict(InvalidInput):
    """Options each valid alone but not together: ``Conflict(("val_frac", "test_frac"), "must sum below 1")``.

    ``field`` is the first of ``fields``; the message names them all.
    """

    def __init__(self, fields: tuple[str, ...] | list[str], problem: str) -> None:
        self._name(tuple(fields), problem)


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


def _spell(message: str, spelling) -> str:
    return _REFS.sub(lambda m: spelling(m.group(1)), message)
