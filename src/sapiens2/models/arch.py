"""The Sapiens2 backbone sizes: one table, not a flag per variant.

Numbers are the official configs (table in docs/official-facts.md §2). ``sapiens2_tiny`` is the small
random-weight arch of the official numerics fixture; it exists for tests and examples, no weights are published
for it.
"""
from __future__ import annotations

from dataclasses import dataclass

PATCH_SIZE = 16
NUM_STORAGE_TOKENS = 8
NUM_PREFIX_TOKENS = 1 + NUM_STORAGE_TOKENS  # class token + storage tokens
TOKENIZER_WINDOW = 4  # the 4K variant pools 4x4 windows of patch tokens into one token
NUM_FULL_ATTENTION_EDGE_BLOCKS = 8  # first and last 8 blocks use full multi-head attention
ROPE_BASE = 100.0
NORM_EPS = 1e-6


@dataclass(frozen=True)
class BackboneArch:
    name: str
    embed_dim: int
    depth: int
    num_heads: int
    ffn_dim: int
    tokenizer_depth: int
    # The input size a model of this arch is built at when none is given (None: the official 1024x768); the
    # distillation students are made for small inputs (pose crops 256x192, seg images 512x384).
    input_size: tuple[int, int] | None = None

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def kv_heads_per_block(self) -> tuple[int, ...]:
        """Key/value heads of each block: full heads at both ends, heads/2 (GQA) in between."""
        edge = NUM_FULL_ATTENTION_EDGE_BLOCKS
        return tuple(
            self.num_heads if (i < edge or i >= self.depth - edge) else self.num_heads // 2
            for i in range(self.depth)
        )

    @property
    def gqa_blocks(self) -> tuple[int, ...]:
        return tuple(i for i, kv in enumerate(self.kv_heads_per_block) if kv != self.num_heads)


ARCHS: dict[str, BackboneArch] = {
    a.name: a
    for a in (
        BackboneArch("sapiens2_tiny", 64, 18, 4, 256, 2),
        BackboneArch("sapiens2_0.1b", 768, 12, 12, 3072, 2),
        BackboneArch("sapiens2_0.4b", 1024, 24, 16, 4096, 2),
        BackboneArch("sapiens2_0.8b", 1280, 32, 16, 5120, 3),
        BackboneArch("sapiens2_1b", 1536, 40, 24, 6144, 4),
        BackboneArch("sapiens2_5b", 2432, 56, 32, 9728, 6),
        # Distillation students (sapiens2 distill): the backbone's block at width 128, head dim 64; their heads are
        # in the task table. Not official: no weights are published (see README "Real time").
        BackboneArch("sapiens2_student_pose", 128, 6, 2, 512, 2, input_size=(256, 192)),
        BackboneArch("sapiens2_student_seg", 128, 4, 2, 512, 2, input_size=(512, 384)),
    )
}


def get_arch(arch: str | BackboneArch) -> BackboneArch:
    """Look up an arch by its full name (``sapiens2_0.4b``) or short one (``0.4b``, ``tiny``)."""
    if isinstance(arch, BackboneArch):
        return arch
    key = str(arch).strip().lower().replace("-", "_")
    if not key.startswith("sapiens2_"):
        key = "sapiens2_" + key
    if key not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[key]
