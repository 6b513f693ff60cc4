"""Backbone pretraining (Sapiens2 objective): masked reconstruction + DINO/iBOT self-distillation with an EMA teacher.

Modules, one job each: ``views`` (appearance-preserving crops/flips), ``masking`` (patch masks, made by the
collate), ``collate``, ``sources`` / ``dataset`` (image folders and streamed tar shards), ``decoder`` (light patch
decoder), ``heads`` (projection heads), ``ema`` (teacher + momentum schedule), ``losses`` (MAE pixel, DINO class,
iBOT patch), ``model`` (student/teacher/objective), ``monitor`` (collapse guard), ``export`` (official pretrain
safetensors), ``config``, ``trainer`` (the loop). Entry points: :func:`pretrain` and :func:`export_backbone`.
"""
from .config import PretrainConfig
from .export import export_backbone
from .masking import MaskSpec
from .model import ObjectiveConfig, PretrainModel
from .trainer import PretrainResult, pretrain
from .views import ViewSpec

__all__ = ["MaskSpec", "ObjectiveConfig", "PretrainConfig", "PretrainModel", "PretrainResult", "ViewSpec",
           "export_backbone", "pretrain"]
