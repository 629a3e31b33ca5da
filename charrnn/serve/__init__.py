"""``charrnn serve``: a web page, an OpenAI-compatible streaming API with continuous batching, a live dashboard.

Needs the ``serve`` extra (``pip install 'charrnn[serve]'``)::

    from charrnn.serve import create_app
    app = create_app(["cv/"])          # any ASGI server: uvicorn, gunicorn -k uvicorn.workers.UvicornWorker
"""


def create_app(*args, **kwargs):
    from .app import create_app as make

    return make(*args, **kwargs)


create_app.__doc__ = "The ASGI app; see :func:`charrnn.serve.app.create_app`."
