"""What identifies an input file's contents cheaply: its size and modification time (not a hash: stat only)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["file_identity"]


def file_identity(path: str | os.PathLike) -> dict[str, int] | None:
    """Size and modification time of a file (cheap, unlike a hash); None for anything that is not a file."""
    try:
        info = Path(path).stat()
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return {"bytes": info.st_size, "modified_ns": info.st_mtime_ns}
