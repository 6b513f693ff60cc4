"""Aesthetic / realism heads on the CLIP image embedding, in the public LAION predictor formats.

Accepted state dicts (``.pth`` / ``.pt`` via ``torch.load(weights_only=True)``, or ``.safetensors``):
- a single linear layer: ``weight`` (1, D) + ``bias`` (1,) -- LAION's ``sa_0_4_vit_*_linear.pth``;
- a chain ``layers.<i>.weight/bias`` -- the "improved aesthetic predictor" MLP (Linear layers with Dropout between,
  no activations, so it is applied as consecutive affine maps in index order);
- either of the above under a prefix such as ``module.``, ``model.``, ``linear.``, ``fc.`` or ``head.``.
Input: the L2-normalised embedding (as LAION trained them). Output: one float per image.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sapiens2.errors import CheckpointError

__all__ = ["LinearHead", "load_linear_head"]


class LinearHead:
    """Consecutive affine layers (W_i, b_i) applied in float64 NumPy."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]):
        if not layers:
            raise CheckpointError("an aesthetic head needs at least one layer")
        for (w1, _), (w2, _) in zip(layers, layers[1:]):
            if w2.shape[1] != w1.shape[0]:
                raise CheckpointError(f"head layers do not chain: {w1.shape} then {w2.shape}")
        if layers[-1][0].shape[0] != 1:
            raise CheckpointError(f"the head must output one value, its last layer is {layers[-1][0].shape}")
        self.layers = layers

    @property
    def input_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise CheckpointError(f"the head expects {self.input_dim}-d embeddings, got shape {x.shape}")
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        for w, b in self.layers:
            x = x @ w.T + b
        return x[:, 0]


def _read_state(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return {k: np.asarray(v, np.float64) for k, v in load_file(str(path)).items()}
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {k: v.detach().to(torch.float64).numpy() for k, v in state.items() if hasattr(v, "detach")}


def load_linear_head(path: str | Path) -> LinearHead:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"aesthetic head file not found: {path}")
    state = _read_state(path)
    for prefix in ("module.", "model.", "head.", "linear.", "fc."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if "weight" in state and "bias" in state and len(state) == 2:
        return LinearHead([(state["weight"].reshape(-1, state["weight"].shape[-1]), state["bias"].reshape(-1))])
    indexed = {}
    for key, value in state.items():
        m = re.fullmatch(r"layers\.(\d+)\.(weight|bias)", key)
        if m is None:
            raise CheckpointError(f"{path}: unexpected key {key!r}; expected weight/bias or layers.<i>.weight/bias")
        indexed.setdefault(int(m.group(1)), {})[m.group(2)] = value
    if not indexed:
        raise CheckpointError(f"{path}: no layers found (keys: {sorted(state)[:6]})")
    layers = []
    for i in sorted(indexed):
        if set(indexed[i]) != {"weight", "bias"}:
            raise CheckpointError(f"{path}: layer {i} needs both weight and bias")
        layers.append((indexed[i]["weight"], indexed[i]["bias"].reshape(-1)))
    return LinearHead(layers)
