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


def pixel_limit_reason(width: int, height: int, limit: int) -> str:
    """The words of every pixel-limit error: the size, the limit and how to change it."""
    return (f"{width}x{height} is {width * height / 1e6:.1f} megapixels, over the limit of {limit / 1e6:g} "
            f"megapixels; raise it with --max-pixels N (max_pixels=N in Python), 0 for no limit")


class ImageTooLargeError(ImageReadError):
    """An image whose header declares more pixels than the limit: refused before it is decoded."""

    def __init__(self, path: str | PathLike[str], width: int, height: int, limit: int):
        self.width, self.height, self.limit = int(width), int(height), int(limit)
        super().__init__(path, pixel_limit_reason(self.width, self.height, self.limit))


class VideoTooLargeError(VideoReadError):
    """A video whose frames (size from the container) have more pixels than the limit."""

    def __init__(self, path: str | PathLike[str], width: int, height: int, limit: int):
        self.width, self.height, self.limit = int(width), int(height), int(limit)
        super().__init__(path, "frames of " + pixel_limit_reason(self.width, self.height, self.limit))
