"""The optional Ray Data stack (ray[data], pyarrow), imported lazily, and connecting to Ray: an existing
connection, ``address`` / ``RAY_ADDRESS`` (a cluster), or a local instance started here."""
from __future__ import annotations

import importlib
import logging
import os

from sapiens2.errors import Sapiens2Error

__all__ = ["ExtraMissingError", "connect_ray", "require"]

log = logging.getLogger(__name__)


class ExtraMissingError(Sapiens2Error, ImportError):
    """A package of an optional extra (``curate``, ``ray``) is not installed."""


def require(module: str, *, extra: str = "curate", needed_by: str = "curation"):
    """Import ``module`` or raise :class:`ExtraMissingError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExtraMissingError(
            f"{needed_by} needs {module!r} ({exc}); install the extra: pip install sapiens2[{extra}]") from exc


def connect_ray(address: str = "", num_cpus: int = 0, progress: bool = False, *, extra: str = "curate",
                needed_by: str = "curation"):
    """Return the ``ray`` module, initialised. Already-initialised connections are reused as they are."""
    ray = require("ray", extra=extra, needed_by=needed_by)
    require("ray.data", extra=extra, needed_by=needed_by)
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
