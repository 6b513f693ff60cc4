"""Tell which backbone arch (and whether the 4K tokenizer) a state dict holds, from tensor shapes alone.

Users never have to say which size a file is. Only shapes are read, so this works on memory-mapped or
``meta`` tensors without touching data.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..errors import CheckpointError
from ..models.arch import ARCHS
from .convert import OFFICIAL, detect_layout, to_official

_BLOCK = re.compile(r"blocks\.(\d+)\.")
_TOKENIZER_BLOCK = re.compile(r"tokenizer\.blocks\.(\d+)\.")


def infer_backbone_config(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, bool]:
    """``(arch_name, use_tokenizer)`` of a backbone state dict.

    Accepts the official layout, with or without the ``backbone.`` prefix of task files, and the
    transformers layout. Reads the embed dim (class token / patch embedding), the number of blocks, the
    head dim (``q_norm``), the FFN width (``w3``) and the tokenizer's presence and depth, and matches them
    against :data:`sapiens2.models.arch.ARCHS`. Raises :class:`CheckpointError` when no arch matches.
    """
    if detect_layout(state_dict) != OFFICIAL:
        # Convert on meta tensors: only names and shapes are needed, no memory is touched.
        state_dict = to_official({k: torch.empty(tuple(v.shape), device="meta") for k, v in state_dict.items()})
    sd = _backbone_part(state_dict)
    found = _measure(sd)
    for arch in ARCHS.values():
        if (arch.embed_dim, arch.depth, arch.head_dim, arch.ffn_dim) != (
                found["embed_dim"], found["depth"], found["head_dim"], found["ffn_dim"]):
            continue
        tok_depth = found["tokenizer_depth"]
        if found["use_tokenizer"] and tok_depth != arch.tokenizer_depth:
            raise CheckpointError(
                f"checkpoint looks like {arch.name} but its 4K tokenizer has {tok_depth} blocks, not "
                f"{arch.tokenizer_depth}"
            )
        return arch.name, found["use_tokenizer"]
    known = "; ".join(
        f"{a.name}: embed {a.embed_dim}, {a.depth} blocks, head dim {a.head_dim}, ffn {a.ffn_dim}"
        for a in ARCHS.values()
    )
    raise CheckpointError(
        f"checkpoint shapes match no Sapiens2 arch: embed {found['embed_dim']}, {found['depth']} blocks, "
        f"head dim {found['head_dim']}, ffn {found['ffn_dim']}. Known archs: {known}"
    )


def _backbone_part(sd: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if any(k.startswith("backbone.") for k in sd):
        return {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def _shape(sd: Mapping[str, torch.Tensor], key: str, what: str) -> tuple[int, ...]:
    if key not in sd:
        sample = ", ".join(list(sd)[:6])
        raise CheckpointError(
            f"not a Sapiens2 backbone checkpoint: no {key!r} ({what}); its keys start with: {sample}"
        )
    return tuple(sd[key].shape)


def _measure(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    embed = _shape(sd, "cls_token", "class token")[-1]
    blocks = {int(m[1]) for k in sd if (m := _BLOCK.match(k))}
    if not blocks:
        raise CheckpointError("not a Sapiens2 backbone checkpoint: it has no blocks.N.* keys")
    if blocks != set(range(len(blocks))):
        missing = sorted(set(range(max(blocks) + 1)) - blocks)
        raise CheckpointError(f"checkpoint blocks are not numbered 0..{max(blocks)}: missing {missing[:10]}")
    head_dim = _shape(sd, "blocks.0.attn.q_norm.weight", "QK-norm weight, gives the head dim")[0]
    ffn_dim = _shape(sd, "blocks.0.ffn.w3.weight", "FFN output projection")[-1]
    tokenizer_blocks = {int(m[1]) for k in sd if (m := _TOKENIZER_BLOCK.match(k))}
    has_tokenizer = bool(tokenizer_blocks) or any(k.startswith("tokenizer.") for k in sd)
    return {
        "embed_dim": embed,
        "depth": len(blocks),
        "head_dim": head_dim,
        "ffn_dim": ffn_dim,
        "use_tokenizer": has_tokenizer,
        "tokenizer_depth": len(tokenizer_blocks),
    }
