"""``sapiens2 serve``: the models behind an HTTP API (FastAPI + uvicorn, the ``serve`` extra) and a web page.

- :mod:`.app`: the application factory (routes, errors, API key, access log, shutdown)
- :mod:`.batching`: concurrent requests gathered into one ``predict_many`` per batch, off the event loop
- :mod:`.uploads`: size-capped, checked uploads; :mod:`.results`: result folders and the JSON answers
- ``static/``: the page served at ``/`` (plain HTML/CSS/JS, nothing fetched from elsewhere)

FastAPI is imported only when an app is built, so ``import sapiens2`` never needs it.
"""
from .batching import Batcher, PredictionFailed, ServerBusy

__all__ = ["Batcher", "PredictionFailed", "ServeConfig", "ServerBusy", "create_app"]


def __getattr__(name):  # the app module imports FastAPI lazily, but keep even its import out of the way
    if name in ("ServeConfig", "create_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
