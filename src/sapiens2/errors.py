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


class UsageError(Sapiens2Error, ValueError):
    """A bad option value (the command line's or an API argument's). The CLI reports it in one line under the
    sub-command's usage line and exits with status 2."""


class DeviceError(UsageError):
    """A device that this machine or this torch build does not have; the message names the ones it has."""


class RunExistsError(UsageError):
    """An output folder that already holds another training run (its checkpoints would be mixed with ours)."""


class UnknownTaskError(UsageError):
    """A task name that is neither a task nor an alias of one; the message lists both (same text everywhere)."""


class TrainingError(Sapiens2Error, ValueError):
    """Training (fine-tuning or pretraining) was given something it cannot work with."""


class TrainingConfigError(TrainingError, UsageError):
    """A training setting that cannot work: a bad value, an unknown key, options that contradict each other."""


class LossInputError(TrainingError):
    """Tensors a loss cannot take: mismatched shapes, wrong dtypes, empty masks where a value is needed."""


def one_line_reason(exc: BaseException) -> str:
    """``"TypeName: first line of the message"`` (the type alone for an empty message): how a foreign exception is
    quoted inside our own one-line errors and reports."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def failure_reason(exc: BaseException) -> str:
    """A failed input's one-line reason; our own errors already name the file, so keep only their reason."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else one_line_reason(exc)


class ExportError(Sapiens2Error, ValueError):
    """A model that cannot be exported as asked (a format, dtype or backend combination that does not work)."""


class ExportedModelError(ExportError):
    """An exported file that cannot be used: not an ONNX/.pt2 file, no sapiens2 metadata, or another task, input
    size or opset than the one asked for. The message names the fix (re-export with ``sapiens2 export``)."""


class MissingExtraError(Sapiens2Error, ImportError):
    """An optional dependency that is not installed; the message names the extra (``pip install 'sapiens2[onnx]'``)."""
