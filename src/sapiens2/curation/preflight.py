"""Every model file a curation run needs, checked on the driver before Ray starts.

Without this, a missing model shows up only when the first actor loads it: after Ray has started and the inputs are
listed, as a wall of actor tracebacks with the reason buried in them (an offline machine without a cached CLIP
took ~40 s to get there). Here each problem is one :class:`ModelNotAvailableError` line saying which model, how to
fetch it, how to point at a local copy, or how to turn the stage off. Nothing is downloaded here; the hub is asked
at most one short question (is the file there), as :mod:`sapiens2.checkpoints.hub` does for Sapiens2 weights.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from sapiens2.checkpoints.hub import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, is_offline
from sapiens2.errors import ModelNotAvailableError, one_line_reason

from .config import CurateConfig

__all__ = ["CLIP_OFF", "clip_enabled", "check_models"]

log = logging.getLogger(__name__)
CLIP_OFF = ("", "none")  # clip.model values that turn the CLIP stage off
_CLIP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def clip_enabled(cfg: CurateConfig) -> bool:
    return cfg.clip.model.strip().lower() not in CLIP_OFF


def check_models(cfg: CurateConfig) -> None:
    """Raise :class:`ModelNotAvailableError` (one line) for the first model of the run that cannot be loaded."""
    if cfg.person.detector == "onnx":
        path = Path(cfg.person.model_path).expanduser() if cfg.person.model_path else None
        if path is None or not path.is_file():
            raise ModelNotAvailableError(
                f"person detector: the ONNX file {str(path) if path else '(none given)'!r} was not found; set "
                "person.model_path in curate.yaml to an exported detector (.onnx), or use the shipped one: "
                "--detector hog (person.detector: hog)")
    if clip_enabled(cfg):
        _check_clip(cfg.clip.model)
        for key in ("aesthetic_head", "realism_head"):
            value = getattr(cfg.clip, key)
            if value and not Path(value).expanduser().is_file():
                raise ModelNotAvailableError(
                    f"clip.{key}: the file {value!r} was not found; point clip.{key} in curate.yaml at the "
                    f"head's .pth/.safetensors file, or set it to '' to skip that score")
    else:
        for key in ("aesthetic_head", "realism_head"):
            if getattr(cfg.clip, key):
                raise ModelNotAvailableError(
                    f"clip.{key} scores CLIP embeddings, but the CLIP stage is off (clip.model: "
                    f"{cfg.clip.model!r}); set clip.model to a CLIP model or clip.{key} to ''")
        log.info("CLIP stage off: no CLIP scores, no embedding de-duplication, no cluster balancing")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _check_clip(name: str) -> None:
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotAvailableError(
                f"CLIP model folder {name!r} has no config.json; give a folder written by transformers' "
                "save_pretrained (model and tokenizer), a hub name, or turn the stage off: --clip-model none")
        return
    if _looks_like_path(name):
        raise ModelNotAvailableError(
            f"CLIP model {name!r}: no such folder (and not a hub name like openai/clip-vit-base-patch32); "
            "give --clip-model /path/to/folder (clip.model in curate.yaml) or turn the stage off: --clip-model none")
    if _clip_cached(name):
        return
    why = "offline mode is on (HF_HUB_OFFLINE) and it is not in the local Hugging Face cache" if is_offline() \
        else _hub_unreachable(name)
    if why is None:
        return  # reachable: the actors download it into the cache
    raise ModelNotAvailableError(
        f"CLIP model {name!r} is not available: {why}. Fetch it on a machine with network access "
        f"(`hf download {name}`, then copy the Hugging Face cache, or save it to a folder), point at a local "
        "copy with --clip-model /path/to/folder (clip.model in curate.yaml), or turn the CLIP stage off with "
        "--clip-model none (no CLIP scores, embedding de-duplication or balancing)")


def _cache_dir() -> str | None:
    """The hub cache as the actors (fresh processes) will see it: the environment now, not at import time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default


def _clip_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=_cache_dir())
        return isinstance(found, str) and os.path.isfile(found)

    return cached("config.json") and any(cached(f) for f in _CLIP_WEIGHTS)


def _hub_unreachable(repo_id: str) -> str | None:
    """None when the hub answers for the model's config, else why not (one request, short timeout, no retry)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or None
    url = hf_hub_url(repo_id, "config.json", endpoint=endpoint)
    try:
        get_hf_file_metadata(url, timeout=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except Exception as e:  # network errors come from the HTTP client, hub errors from huggingface_hub
        return f"it is not in the local Hugging Face cache and {url} could not be reached ({one_line_reason(e)})"
    return None
