"""DINO/iBOT projection heads: MLP -> L2-normalised bottleneck -> cosine logits over K prototypes.

Defaults are DINOv2's (3 layers, hidden 2048, bottleneck 256, 65536 prototypes). The last layer's prototype
vectors are normalised in the forward pass, which is weight normalisation with the gain frozen at 1 as DINO
does, written without a parametrisation so DDP/FSDP and the EMA copy see plain parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import TrainingConfigError


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise TrainingConfigError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        return self.prototypes.shape[0]

    def reset_parameters(self) -> None:
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised bottleneck embedding (..., bottleneck_dim)."""
        return F.normalize(self.mlp(x), dim=-1, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (..., out_dim): cosine similarity to each prototype."""
        return F.linear(self.embed(x), F.normalize(self.prototypes, dim=-1, eps=1e-6))
