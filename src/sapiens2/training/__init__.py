"""Fine-tuning support: per-task losses (``sapiens2.training.losses``) and, later, the trainer.

The loss entry point is :func:`sapiens2.training.losses.build_task_loss`; its configs carry the official
per-task weights as defaults.
"""
from .losses import LOSS_CONFIGS, TaskLoss, build_task_loss, loss_config_from_dict

__all__ = ["LOSS_CONFIGS", "TaskLoss", "build_task_loss", "loss_config_from_dict"]
