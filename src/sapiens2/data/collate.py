"""Batching of the datasets' items, shared by the training and evaluation loaders."""
from __future__ import annotations

from typing import Any

import torch


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack each key of a list of item dicts: tensors with ``torch.stack``, anything else via ``torch.as_tensor``."""
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else torch.as_tensor(vals)
    return out
