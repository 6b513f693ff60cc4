"""sapiens2: Meta's Sapiens2 human-centric vision models, loadable from the official checkpoints."""
from .errors import ArchMismatchError, CheckpointError, InputSizeError, ModelNotAvailableError, Sapiens2Error
from .models import ARCHS, Sapiens2Backbone, build_backbone, get_arch

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "ArchMismatchError", "CheckpointError", "InputSizeError", "ModelNotAvailableError",
    "Sapiens2Backbone", "Sapiens2Error", "build_backbone", "get_arch",
]
