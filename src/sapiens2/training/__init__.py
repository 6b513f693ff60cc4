"""Fine-tuning and pretraining: the datasets and transforms training reads (``datasets``, ``transforms``), the
per-task losses (``losses``, one entry per task in ``losses.task_loss.LOSS_TABLE``), the trainer, and
self-supervised pretraining (``pretrain``).

The loss entry point is :func:`sapiens2.training.losses.build_task_loss`; its configs carry the official
per-task weights as defaults.
"""
from .losses import LOSS_CONFIGS, TaskLoss, build_task_loss, loss_config_from_dict

__all__ = ["LOSS_CONFIGS", "TaskLoss", "build_task_loss", "loss_config_from_dict"]
