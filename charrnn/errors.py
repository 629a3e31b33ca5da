"""The one exception type that the CLI turns into a one-line message."""


class CharRNNError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``charrnn: error: <message>`` on stderr and exits with ``exit_code``.
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
