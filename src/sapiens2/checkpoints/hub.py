"""Fetch a published checkpoint through ``huggingface_hub`` into its cache, failing fast without a network.

``hf_hub_download`` on its own retries an unreachable server for about half a minute before giving up, so
the order here is: the local cache first, then offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``,
read when called), then one metadata request with a short timeout and no retries, and only then the
download. Every failure is a :class:`ModelNotAvailableError` that says which repo and file to fetch and how
to pass a local file instead.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelNotAvailableError, one_line_reason
from .registry import PublishedModel

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
TIMEOUT_ENV = "SAPIENS2_HUB_TIMEOUT"


def is_offline() -> bool:
    """Offline mode as huggingface_hub defines it, read from the environment at call time.

    (huggingface_hub reads it once at import; its own flag, if set, also fails fast through the
    metadata request, which it refuses to send.)
    """
    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"}


def cached_checkpoint(model: PublishedModel, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The checkpoint's path in the local Hugging Face cache, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model.repo_id, model.filename, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def download_checkpoint(model: PublishedModel, *, cache_dir: str | os.PathLike | None = None,
                        endpoint: str | None = None, timeout: float | None = None) -> Path:
    """Local path of ``model``'s file, downloaded into the Hugging Face cache if it is not there yet.

    ``endpoint`` defaults to ``HF_ENDPOINT`` (read now) or huggingface.co; ``timeout`` (seconds, default
    ``$SAPIENS2_HUB_TIMEOUT`` or 5) bounds the reachability check, so an offline machine fails in
    seconds rather than minutes.
    """
    return fetch_file(model.repo_id, model.filename, lambda why: _message(model, why), cache_dir=cache_dir,
                      endpoint=endpoint, timeout=timeout)


def fetch_file(repo_id: str, filename: str, message: Callable[[str], str], *,
               cache_dir: str | os.PathLike | None = None, endpoint: str | None = None,
               timeout: float | None = None) -> Path:
    """Local path of one file of a Hugging Face model repo, by the rule of :func:`download_checkpoint` (cache,
    then offline mode, then one short reachability check, then the download). ``message(why)`` makes the text
    of the :class:`ModelNotAvailableError` raised when the file cannot be had (what to fetch, what to pass)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    if isinstance(found, str) and os.path.isfile(found):
        logger.debug("using cached %s", found)
        return Path(found)
    if is_offline():
        raise ModelNotAvailableError(message("offline mode is on (HF_HUB_OFFLINE) and it is not in the local "
                                             "Hugging Face cache"))
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    url = hf_hub_url(repo_id, filename, endpoint=endpoint)
    try:
        get_hf_file_metadata(url, timeout=timeout)  # a single request: no retries
    except Exception as e:  # network errors come from the HTTP client, hub errors from huggingface_hub
        raise ModelNotAvailableError(message(f"it is not in the local cache and {url} could not be reached "
                                             f"({one_line_reason(e)})")) from e
    logger.info("downloading %s/%s", repo_id, filename)
    try:
        path = hf_hub_download(repo_id, filename, cache_dir=cache_dir, endpoint=endpoint, etag_timeout=timeout)
    except Exception as e:
        raise ModelNotAvailableError(message(f"the download failed ({one_line_reason(e)})")) from e
    return Path(path)


def _message(model: PublishedModel, why: str) -> str:
    return (
        f"cannot load {model.name}: {why}. Fetch {model.filename} from the Hugging Face repo {model.repo_id} "
        f"({model.url}) on a machine with network access, e.g. `{model.download_command}`, then pass the "
        f"local file instead of the name: `--checkpoint PATH` on the command line, or the file path in "
        f"Python ({'load_backbone' if model.task == 'pretrain' else 'load_model'}('/path/to/{model.filename}'))."
    )
