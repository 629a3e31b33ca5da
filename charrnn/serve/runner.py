"""Running the app under uvicorn: bind first (a busy port is one clear error), print what is served, stop cleanly."""

from __future__ import annotations

import socket
import sys

from ..errors import CharRNNError


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
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the signal it caught once it has shut down
        pass
    finally:
        sock.close()
        server_state.close()
    log("charrnn serve: stopped")
    sys.stdout.flush()
