"""The application layer for inference: :class:`Predictor` loads the task models (device and precision from
:mod:`sapiens2.runtime`), finds person boxes and runs each task's pre/post-processing from :mod:`sapiens2.tasks`."""
from .predictor import ModelRunner, PredictInput, Predictor, StageClock

__all__ = ["ModelRunner", "PredictInput", "Predictor", "StageClock"]
