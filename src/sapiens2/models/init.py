"""Random initialisation of transformer parameters by name, for training from scratch."""
from __future__ import annotations

import torch
from torch import nn


def init_transformer_weights(module: nn.Module, layer_scale: float) -> None:
    """LayerScale weights (``*gamma.weight``) to ``layer_scale``, other 1-D weights (norms) to 1, biases to 0,
    everything else truncated normal (std 0.02). Tensors on the meta device are skipped."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.is_meta:
                continue
            if name.endswith("gamma.weight"):
                nn.init.constant_(p, layer_scale)
            elif p.ndim == 1 and name.endswith(".weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.trunc_normal_(p, std=0.02)
