"""The optional ``curate`` extra (ray[data], transformers, pyarrow), imported lazily, and connecting to Ray: an
existing connection, ``address`` / ``RAY_ADDRESS`` (a cluster), or a local instance started here."""
from __future__ import annotations

import importlib
import logging
import os

from sapiens2.errors import Sapiens2Error

__all__ = ["CurateExtraMissingError", "require", "connect_ray"]

log = logging.getLogger(__name__)


class CurateExtraMissingError(Sapiens2Error, ImportError):
    """A package of the optional ``curate`` extra is not installed."""


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CurateExtraMissingError(
            f"curation needs {module!r} ({exc}); install the extra: pip install sapiens2[curate]") from exc


def connect_ray(address: str = "", num_cpus: int = 0, progress: bool = False):
    """Return the ``ray`` module, initialised. Already-initialised connections are reused as they are."""
    ray = require("ray")
    require("ray.data")
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS", "")
        kwargs = dict(include_dashboard=False, configure_logging=False, log_to_driver=False)
        if target:
            log.info("connecting to the Ray cluster at %s", target)
            ray.init(address=target, **kwargs)
        else:
            log.info("starting a local Ray instance (%s CPUs)", num_cpus or "all")
            ray.init(address="local", num_cpus=num_cpus or None, **kwargs)  # never a stale cluster file
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    return ray
