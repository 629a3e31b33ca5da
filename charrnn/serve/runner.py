"""Running the app under uvicorn: bind first (a busy port is one clear error), print what is served, stop cleanly."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from ..errors import CharRNNError


class Stopped(Exception):
    """SIGTERM, after uvicorn's graceful shutdown."""


def _stopped(signum, frame) -> None:
    raise Stopped


def _server_class():
    import uvicorn

    class ClosingServer(uvicorn.Server):
        """Ends the open streams (an error chunk, then [DONE]) before waiting for connections to close."""

        def __init__(self, config, close_streams) -> None:
            super().__init__(config)
            self.close_streams = close_streams

        async def shutdown(self, sockets=None) -> None:
            await asyncio.to_thread(self.close_streams)
            await super().shutdown(sockets)

    return ClosingServer


def _Server(config, close_streams):
    return _server_class()(config, close_streams)


def log(message: str) -> None:
    print(message, flush=True)


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        reason = "the port is already in use" if exc.errno == 98 else (exc.strerror or str(exc))
        raise CharRNNError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def serve(checkpoints: list[str], runs: list[str], host: str, port: int, **options) -> None:
    """Load the models, bind, print the URL, models and limits, and serve until Ctrl-C or SIGTERM."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise CharRNNError(f"serve needs the serve extra: pip install 'charrnn[serve]' ({exc.name} is missing)") from None
    app = create_app(checkpoints, runs, log=log, **options)
    server_state = app.state.server
    sock = bind(host, port)
    where = sock.getsockname()
    shown = f"[{where[0]}]" if ":" in where[0] else where[0]
    log(f"charrnn serve: http://{shown}:{where[1]}/")
    for m in server_state.models.values():
        d = m.describe()
        a = d["architecture"]
        follow = f", following {m.source}" if m.follows else ""
        log(f"  model {d['id']}: {m.current.path} ({a['model_type']} {a['num_layers']}x{a['rnn_size']}, "
            f"vocabulary {d['vocab_size']}, iteration {d['iteration']}{follow})")
    s = server_state.settings
    log(f"  limits: batch {s.max_batch} rows, queue {s.max_queue}, max_tokens {s.max_tokens}, "
        f"prompt {s.max_prompt} chars, timeout {s.request_timeout:g} s"
        + (", API key required" if s.api_key else ""))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3,
                            lifespan="on")
    server = _Server(config, server_state.close)
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, Stopped):  # uvicorn re-raises the signal it caught once it has shut down
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        server_state.close()
    log("charrnn serve: stopped")
    sys.stdout.flush()
