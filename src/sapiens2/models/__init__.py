"""Model definitions: the backbone (arch table, layers) and the task heads."""
from .arch import ARCHS, BackboneArch, get_arch
from .backbone import Sapiens2Backbone, build_backbone
from .heads import TASKS, infer_head_config, infer_task
from .task_model import Sapiens2TaskModel, build_model, build_model_for_state_dict

__all__ = [
    "ARCHS", "BackboneArch", "Sapiens2Backbone", "Sapiens2TaskModel", "TASKS", "build_backbone", "build_model",
    "build_model_for_state_dict", "get_arch", "infer_head_config", "infer_task",
]
