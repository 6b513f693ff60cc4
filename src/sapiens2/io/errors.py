"""Errors raised while reading inputs or writing outputs; each names the file and the reason."""
from __future__ import annotations

from os import PathLike

from sapiens2.errors import Sapiens2Error


class _PathError(Sapiens2Error):
    """An error about one file: ``path`` and ``reason`` are kept for callers that report per-file failures."""

    verb = "use"

    def __init__(self, path: str | PathLike[str], reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot {self.verb} {self.path!r}: {reason}")


class ImageReadError(_PathError, ValueError):
    """A file that is missing, empty, truncated, corrupt or not an image."""

    verb = "read image"


class VideoReadError(_PathError, ValueError):
    """A video that is missing, cannot be opened, or has no decodable frame."""

    verb = "read video"


class OutputWriteError(_PathError, OSError):
    """An output that cannot be written (directory not creatable or not writable, disk full, ...)."""

    verb = "write"
