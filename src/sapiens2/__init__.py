"""sapiens2: Meta's Sapiens2 human-centric vision models, loadable from the official checkpoints.

    import sapiens2
    backbone = sapiens2.load_backbone("sapiens2-pretrain-0.4b")     # or a local .safetensors/.pth file
    seg = sapiens2.load_model("sapiens2-seg-0.4b")                  # task and arch inferred from the file
    predictor = sapiens2.Predictor(["pose", "seg"], model="0.4b")   # images in, typed results out
"""
import os as _os

# OpenCV refuses images over its own CV_IO_MAX_IMAGE_PIXELS (2^30 by default), which it reads from this variable
# once, when cv2 is loaded. Our limit (``max_pixels`` / ``--max-pixels``, checked from the file header first, with
# a message naming the option) is the one users set, so OpenCV's is lifted here, before anything imports cv2,
# to let ``max_pixels=0`` really mean "no limit". A value already in the environment is kept.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 40))

from .errors import ArchMismatchError, CheckpointError, InputSizeError, ModelNotAvailableError, Sapiens2Error

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "ArchMismatchError", "CheckpointError", "InputSizeError", "ModelNotAvailableError", "PUBLISHED_MODELS",
    "Sapiens2Backbone", "Sapiens2Error", "Sapiens2TaskModel", "TASKS", "build_backbone", "build_model", "get_arch",
    "list_models", "load_backbone", "load_model",
]


# Imported when first asked for: they pull in torch, which processes that only read images or files (Ray decode
# tasks, curation workers, the CLI's planning) need not pay for (seconds, hundreds of MB each).
_CHECKPOINTS = ("PUBLISHED_MODELS", "list_models", "load_backbone", "load_model")
_MODELS = ("ARCHS", "TASKS", "Sapiens2Backbone", "Sapiens2TaskModel", "build_backbone", "build_model", "get_arch")


def __getattr__(name):
    if name in _CHECKPOINTS:
        from . import checkpoints
        return getattr(checkpoints, name)
    if name in _MODELS:
        from . import models
        return getattr(models, name)
    # The Predictor pulls in OpenCV and the pipelines; import it only when asked for.
    if name == "Predictor":
        from .inference.predictor import Predictor
        return Predictor
    raise AttributeError(f"module 'sapiens2' has no attribute {name!r}")
