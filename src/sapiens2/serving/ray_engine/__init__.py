"""``sapiens2 predict --engine ray``: the predict job on Ray Data (a local Ray by default, or a cluster), with the
local job's task table, predictor, writers and completion records; see :mod:`.job`."""
from .formats import FORMATS
from .inputs import RayInput, list_predict_inputs
from .job import PredictInterrupted, RayOptions, RaySummary, predict_ray

__all__ = ["FORMATS", "PredictInterrupted", "RayInput", "RayOptions", "RaySummary", "list_predict_inputs",
           "predict_ray"]
