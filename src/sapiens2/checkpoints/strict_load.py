"""Load an official-layout state dict into a model strictly, without a second copy of the weights.

The model is expected to be built on the ``meta`` device; the checkpoint's (memory-mapped) tensors are
*assigned* to it (``load_state_dict(strict=True, assign=True)``), so the weights exist once. Keys and
shapes are compared first so that a checkpoint of another arch or task gets an
:class:`~sapiens2.errors.ArchMismatchError` listing what is missing, unexpected and of another shape.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ArchMismatchError, CheckpointError
from ..models.rope import RopePositionEmbedding

logger = logging.getLogger(__name__)

_LIST_AT_MOST = 8


def compare_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]
                       ) -> tuple[list[str], list[str], dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]:
    """``(missing, unexpected, mismatched)`` of ``state_dict`` against ``model``'s keys and shapes.

    ``mismatched`` maps key -> (checkpoint shape, model shape). Works on ``meta`` models.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = {
        k: (tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    }
    # Shallow keys first (cls_token before blocks.N.*): they say the most about what went wrong.
    order = {k: i for i, k in enumerate((*expected, *state_dict))}

    def by_depth(key: str):
        return key.count("."), order[key]

    missing.sort(key=by_depth)
    unexpected.sort(key=by_depth)
    mismatched = dict(sorted(mismatched.items(), key=lambda kv: by_depth(kv[0])))
    return missing, unexpected, mismatched


def mismatch_error(missing, unexpected, mismatched, *, source: str = "checkpoint",
                   target: str = "model", hint: str = "") -> ArchMismatchError:
    """An :class:`ArchMismatchError` whose message lists the first few keys of each kind."""
    parts = [f"{source} does not fit {target}"]
    if mismatched:
        shown = "; ".join(f"{k}: checkpoint {list(a)} vs model {list(b)}"
                          for k, (a, b) in list(mismatched.items())[:_LIST_AT_MOST])
        parts.append(f"{len(mismatched)} keys with other shapes ({shown}{_more(mismatched)})")
    if missing:
        parts.append(f"{len(missing)} missing keys ({', '.join(missing[:_LIST_AT_MOST])}{_more(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:_LIST_AT_MOST])}"
                     f"{_more(unexpected)})")
    message = "; ".join(parts[:1] + [", ".join(parts[1:])]) + "."
    if hint:
        message += " " + hint
    return ArchMismatchError(message, missing, unexpected, mismatched)


def _more(items) -> str:
    return f", ... {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else ""


def fill_rope_periods(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Add each RoPE ``periods`` buffer the state dict lacks, computed as the model computes it.

    transformers-written files do not store ``periods`` (docs/official-facts.md §4.1); the model built on
    ``meta`` has no values either, so a CPU copy of the module computes them. Returns the keys it added.
    """
    added = []
    for name, module in model.named_modules():
        if not isinstance(module, RopePositionEmbedding):
            continue
        key = f"{name}.periods" if name else "periods"
        if key in state_dict:
            continue
        fresh = RopePositionEmbedding(module.head_dim, module.dtype, base=module.base, device="cpu")
        state_dict[key] = fresh.periods
        added.append(key)
    if added:
        logger.info("checkpoint has no RoPE periods (transformers layout); computed %s", ", ".join(added))
    return added


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                           device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                           source: str = "checkpoint", target: str | None = None, hint: str = "") -> nn.Module:
    """Assign an official-layout ``state_dict`` to ``model`` (ideally built on ``meta``), strictly.

    - missing RoPE ``periods`` buffers are computed (:func:`fill_rope_periods`);
    - any missing / unexpected key or shape difference raises :class:`ArchMismatchError` naming ``source``
      and ``target`` (default: the model's class name), with ``hint`` appended (e.g. which arch the file
      looks like);
    - floating-point parameters keep the checkpoint's dtype unless ``dtype`` is given; buffers take the
      model's buffer dtype (so the RoPE periods stay in the RoPE dtype);
    - tensors are moved to ``device`` one at a time (default: where they are, i.e. CPU for files);
    - nothing may stay on ``meta`` afterwards (a non-persistent buffer the file cannot fill raises
      :class:`CheckpointError`).
    Returns ``model``.
    """
    state = dict(state_dict)
    fill_rope_periods(model, state)
    missing, unexpected, mismatched = compare_state_dict(model, state)
    if missing or unexpected or mismatched:
        raise mismatch_error(missing, unexpected, mismatched, source=source,
                             target=target or type(model).__name__, hint=hint)
    buffer_dtypes = {k: b.dtype for k, b in model.named_buffers() if k in state}
    for key in list(state):
        value = state[key]
        target_dtype = buffer_dtypes.get(key)
        if target_dtype is None and dtype is not None and value.is_floating_point():
            target_dtype = dtype
        if (target_dtype is not None and value.dtype != target_dtype) or device is not None:
            state[key] = value.to(device=device, dtype=target_dtype)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # keys and shapes matched, so this is something unusual: report it as is
        raise CheckpointError(f"{source} could not be loaded into {type(model).__name__}: {e}") from e
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{type(model).__name__} still has tensors on the meta device after loading "
                              f"{source} (non-persistent buffers the file cannot hold?): {', '.join(left[:8])}")
    return model
