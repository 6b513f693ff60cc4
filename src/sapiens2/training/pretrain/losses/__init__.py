"""The pretraining losses, one per module: MAE pixel reconstruction, DINO class-token and iBOT patch distillation."""
from .dino_cls import DINOClassLoss, teacher_temperature
from .ibot_patch import IBOTPatchLoss
from .mae_pixel import mae_pixel_loss, patchify, unpatchify

__all__ = ["DINOClassLoss", "IBOTPatchLoss", "mae_pixel_loss", "patchify", "teacher_temperature", "unpatchify"]
