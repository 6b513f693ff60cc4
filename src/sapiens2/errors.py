"""Exceptions the library raises for bad input, each naming what was wrong."""


class Sapiens2Error(Exception):
    """Base class of every error sapiens2 raises on purpose."""


class InputSizeError(Sapiens2Error, ValueError):
    """An image tensor whose sides the model cannot tile into patches (or tokenizer windows)."""


class CheckpointError(Sapiens2Error, ValueError):
    """A file that is not a readable checkpoint, or one that does not fit the model."""


class ArchMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes belong to another architecture or task.

    ``missing``, ``unexpected`` and ``mismatched`` (key -> (checkpoint shape, model shape)) are kept
    on the exception so callers can inspect them.
    """

    def __init__(self, message, missing=(), unexpected=(), mismatched=None):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = dict(mismatched or {})


class ModelNotAvailableError(CheckpointError):
    """A published model that could not be fetched (no network, no such file)."""
