"""Checkpoint machinery: read files, convert foreign layouts, infer the arch, find and fetch published
models, and load strictly without holding the weights twice.

Modules, one job each: ``reading`` (file -> tensors), ``convert`` (transformers <-> official keys),
``arch_inference`` (shapes -> arch), ``registry`` (published names), ``hub`` (download / cache),
``strict_load`` (assign into a meta-built model), ``transformers_folder`` (save_pretrained folders: their
config, and writing one), ``loading`` (``load_backbone``, ``load_model`` and the shared steps).
"""
from .arch_inference import infer_backbone_config
from .convert import detect_layout, to_official, to_transformers
from .hub import download_checkpoint
from .loading import (ResolvedCheckpoint, backbone_state_dict, load_backbone, load_model, read_official_state_dict,
                      resolve_checkpoint)
from .reading import read_state_dict
from .registry import PUBLISHED_MODELS, PublishedModel, list_models, resolve_model_name
from .strict_load import compare_state_dict, load_state_dict_strict, mismatch_error
from .transformers_folder import save_transformers, transformers_config

__all__ = [
    "PUBLISHED_MODELS", "PublishedModel", "ResolvedCheckpoint", "backbone_state_dict", "compare_state_dict",
    "detect_layout", "download_checkpoint", "infer_backbone_config", "list_models", "load_backbone", "load_model",
    "load_state_dict_strict", "mismatch_error", "read_official_state_dict", "read_state_dict",
    "resolve_checkpoint", "resolve_model_name", "save_transformers", "to_official", "to_transformers",
    "transformers_config",
]
