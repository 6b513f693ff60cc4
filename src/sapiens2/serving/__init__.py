"""Running the models on user inputs: the batch/video job (``runner``), where outputs go (``naming``), what is
written per task (``outputs``) and the pose JSON layout (``pose_json``)."""
from .outputs import OutputOptions, image_outputs, render_task, video_outputs, write_prediction
from .runner import InputFailure, JobSummary, PredictJob

__all__ = ["InputFailure", "JobSummary", "OutputOptions", "PredictJob", "image_outputs", "render_task",
           "video_outputs", "write_prediction"]
