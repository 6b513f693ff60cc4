"""The one place that maps foreign key layouts to the official one (and back).

The only foreign layout is Hugging Face transformers' Sapiens2 (release 5.23.0; checked against the real
models of 5.24 in tests/test_transformers_interop.py), as docs/official-facts.md §4 records:

- backbone keys are renamed (``blocks.N.attn.wq`` -> ``model.layer.N.attention.q_proj`` ...), the attention
  LayerScale moves to ``layer_scale1.lambda1``, storage tokens become ``embeddings.register_tokens``, the
  final norm is ``norm.weight`` and the fused SwiGLU ``ffn.w12`` is split into ``mlp.gate_proj`` (rows
  [0, F)) and ``mlp.up_proj`` (rows [F, 2F)); the ``rope_embed.periods`` buffer is not stored at all (the
  loader fills it from the model's own computed buffer);
- task files put the backbone under ``model.`` instead of ``backbone.``;
- head convs gain a ``.convolution`` level with Sequential indices divided by 3, upsample stages are called
  ``upsample_layers``, the final conv is ``predictor``, and the pointmap scale branch moves from
  ``decode_head.scale_*`` to a top-level ``scale_head``.

transformers has no 4K tokenizer and no albedo head; ``tokenizer.*`` keys are passed through verbatim in
both directions so nothing is lost, and albedo heads cannot be exported.

Everything here works on shapes only as far as possible, so it runs on ``meta`` tensors; the one
computation is the ``w12`` re-fusion (one concatenation per block).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError
from ..models.heads.task_table import task_spec

logger = logging.getLogger(__name__)

OFFICIAL = "official"
TRANSFORMERS = "transformers"

_P = r"(?P<p>weight|bias)"


@dataclass(frozen=True)
class _Rule:
    """One renaming between an official and a transformers key pattern.

    Templates use ``{i}`` (an index kept as is), ``{k}`` (an index that is ``scale`` times larger on the
    official side: ``nn.Sequential`` positions 0, 3, 6 of conv/norm/act triples vs 0, 1, 2) and ``{p}``
    (``weight`` or ``bias``).
    """

    official: str
    transformers: str
    scale: int = 1
    official_re: re.Pattern = field(init=False, repr=False, compare=False)
    transformers_re: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "official_re", _compile(self.official))
        object.__setattr__(self, "transformers_re", _compile(self.transformers))

    def apply(self, key: str, to: str) -> str | None:
        src_re, dst = (self.official_re, self.transformers) if to == TRANSFORMERS else (
            self.transformers_re, self.official)
        m = src_re.fullmatch(key)
        if m is None:
            return None
        groups = m.groupdict()
        if "k" in groups:
            k = int(groups["k"])
            if to == TRANSFORMERS:
                if k % self.scale:
                    return None
                groups["k"] = str(k // self.scale)
            else:
                groups["k"] = str(k * self.scale)
        return dst.format(**groups)


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    pattern = pattern.replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{k\}", r"(?P<k>\d+)").replace(r"\{p\}", _P)
    return re.compile(pattern)


# Backbone keys relative to the backbone (official: after ``backbone.``; transformers: after ``model.`` in
# task files). ``ffn.w12`` and ``rope_embed.periods`` are handled separately (split / dropped).
_BACKBONE_RULES = (
    _Rule("cls_token", "embeddings.cls_token"),
    _Rule("storage_tokens", "embeddings.register_tokens"),
    _Rule("patch_embed.projection.{p}", "embeddings.patch_embeddings.{p}"),
    _Rule("blocks.{i}.ln1.weight", "model.layer.{i}.norm1.weight"),
    _Rule("blocks.{i}.ln2.weight", "model.layer.{i}.norm2.weight"),
    _Rule("blocks.{i}.attn.wq.{p}", "model.layer.{i}.attention.q_proj.{p}"),
    _Rule("blocks.{i}.attn.wk.{p}", "model.layer.{i}.attention.k_proj.{p}"),
    _Rule("blocks.{i}.attn.wv.{p}", "model.layer.{i}.attention.v_proj.{p}"),
    _Rule("blocks.{i}.attn.q_norm.weight", "model.layer.{i}.attention.q_norm.weight"),
    _Rule("blocks.{i}.attn.k_norm.weight", "model.layer.{i}.attention.k_norm.weight"),
    _Rule("blocks.{i}.attn.proj.{p}", "model.layer.{i}.attention.o_proj.{p}"),
    _Rule("blocks.{i}.attn.gamma.weight", "model.layer.{i}.layer_scale1.lambda1"),
    _Rule("blocks.{i}.ffn.w3.{p}", "model.layer.{i}.mlp.down_proj.{p}"),
    _Rule("ln1.weight", "norm.weight"),
)
_W12_OFFICIAL = re.compile(r"blocks\.(?P<i>\d+)\.ffn\.w12\." + _P)
_GATE_UP_TRANSFORMERS = re.compile(r"model\.layer\.(?P<i>\d+)\.mlp\.(?P<half>gate_proj|up_proj)\." + _P)
_PERIODS = "rope_embed.periods"
# Present in transformers models but not in the official one; safe to drop when reading.
_TRANSFORMERS_ONLY = ("embeddings.mask_token", "rope_embeddings.inv_freq")

# Head rules, full keys. Trunk pieces shared by all heads:
_CONV_LAYERS = _Rule("decode_head.conv_layers.{k}.{p}", "decode_head.conv_layers.{k}.convolution.{p}", scale=3)
_INPUT_CONV = _Rule("decode_head.input_conv.0.{p}", "decode_head.input_conv.convolution.{p}")
_DECONV = _Rule("decode_head.deconv_layers.{k}.{p}", "decode_head.upsample_layers.{k}.convolution.{p}", scale=3)
_PIXEL_SHUFFLE_UP = _Rule("decode_head.upsample_blocks.{i}.0.{p}", "decode_head.upsample_layers.{i}.convolution.{p}")
_POINTMAP_SCALE = (
    _Rule("decode_head.scale_conv_layers.{k}.{p}", "scale_head.conv_layers.{k}.convolution.{p}", scale=3),
    _Rule("decode_head.scale_final_layer.1.{p}", "scale_head.predictor.block1.layers.0.{p}"),
    _Rule("decode_head.scale_final_layer.3.{p}", "scale_head.predictor.block2.layers.0.{p}"),
    _Rule("decode_head.scale_final_layer.5.{p}", "scale_head.predictor.proj.{p}"),
)


def _predictor(task: str) -> _Rule:
    return _Rule(f"decode_head.{task_spec(task).predictor_name}.{{p}}", "decode_head.predictor.{p}")


# Rules per task head (docs/official-facts.md §4.2). Pose and seg are deconv heads; normal, matting and pointmap are
# pixel-shuffle heads with an input conv. Albedo has no transformers counterpart.
HEAD_RULES: dict[str, tuple[_Rule, ...]] = {
    "pose": (_DECONV, _CONV_LAYERS, _predictor("pose")),
    "seg": (_DECONV, _CONV_LAYERS, _predictor("seg")),
    "normal": (_INPUT_CONV, _PIXEL_SHUFFLE_UP, _CONV_LAYERS, _predictor("normal")),
    "matting": (_INPUT_CONV, _PIXEL_SHUFFLE_UP, _CONV_LAYERS, _predictor("matting")),
    "pointmap": (_INPUT_CONV, _PIXEL_SHUFFLE_UP, _CONV_LAYERS, _predictor("pointmap")) + _POINTMAP_SCALE,
}

_TRANSFORMERS_MARKER = re.compile(
    r"(model\.)?(embeddings\.|model\.layer\.\d+\.|norm\.weight$)|decode_head\.(predictor|upsample_layers)\.|"
    r"decode_head\.(input_conv|conv_layers\.\d+)\.convolution\.|scale_head\."
)


def detect_layout(keys) -> str:
    """``"transformers"`` if any key is in the transformers naming, else ``"official"``."""
    return TRANSFORMERS if any(_TRANSFORMERS_MARKER.match(k) for k in keys) else OFFICIAL


# -- transformers -> official ---------------------------------------------------------------------------
def to_official(state_dict: Mapping[str, torch.Tensor], task: str | None = None) -> dict[str, torch.Tensor]:
    """Return the official-layout state dict (a new dict; official input is returned as a shallow copy).

    A transformers task file (``model.*``) becomes ``backbone.*`` + ``decode_head.*``; a transformers
    pretrain file stays unprefixed. ``task`` names the head (pose, seg, normal, matting, pointmap) and is
    inferred from the head's structure when not given. Keys no rule knows are kept as they are, so a strict
    load reports them. ``rope_embed.periods`` is absent from transformers files and stays absent.
    """
    if detect_layout(state_dict) == OFFICIAL:
        return dict(state_dict)
    is_task_file = any(k.startswith("model.embeddings.") for k in state_dict)
    backbone_in, head_in = {}, {}
    for key, value in state_dict.items():
        if is_task_file and key.startswith("model."):
            backbone_in[key[len("model."):]] = value
        elif not is_task_file and not key.startswith(("decode_head.", "scale_head.")):
            backbone_in[key] = value
        else:
            head_in[key] = value
    out = {}
    prefix = "backbone." if is_task_file else ""
    for key, value in _backbone_to_official(backbone_in).items():
        out[prefix + key] = value
    if head_in:
        out.update(_head_to_official(head_in, task))
    return out


def _backbone_to_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    halves: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key in _TRANSFORMERS_ONLY:
            logger.debug("dropping transformers-only key %s", key)
            continue
        m = _GATE_UP_TRANSFORMERS.fullmatch(key)
        if m:
            halves.setdefault((m["i"], m["p"]), {})[m["half"]] = value
            continue
        out[_rename(key, _BACKBONE_RULES, OFFICIAL)] = value
    for (i, p), pair in sorted(halves.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
        if set(pair) != {"gate_proj", "up_proj"}:
            have = next(iter(pair))
            raise CheckpointError(f"transformers checkpoint has model.layer.{i}.mlp.{have}.{p} but not its other "
                                  "half (gate_proj and up_proj are re-fused into the official ffn.w12)")
        # Official SwiGLU is silu(first half) * second half, transformers silu(gate) * up.
        out[f"blocks.{i}.ffn.w12.{p}"] = torch.cat((pair["gate_proj"], pair["up_proj"]), dim=0)
    return out


def _head_to_official(sd: Mapping[str, torch.Tensor], task: str | None) -> dict[str, torch.Tensor]:
    task = task or infer_head_task(sd)
    if task not in HEAD_RULES:
        raise CheckpointError(f"no transformers head layout for task {task!r}; known: {', '.join(HEAD_RULES)}")
    return {_rename(k, HEAD_RULES[task], OFFICIAL): v for k, v in sd.items()}


def infer_head_task(sd: Mapping[str, torch.Tensor]) -> str:
    """The task of a transformers-layout head from its structure (docs/official-facts.md §4.2).

    scale head -> pointmap; input conv (pixel-shuffle trunk) -> matting for 4 outputs, else normal;
    otherwise a deconv head: 2 upsample stages (heatmaps at 1/4) -> pose, else seg.
    """
    keys = list(sd)
    if any(k.startswith("scale_head.") for k in keys):
        return "pointmap"
    if any(k.startswith("decode_head.input_conv.") for k in keys):
        pred = sd.get("decode_head.predictor.weight")
        return "matting" if pred is not None and pred.shape[0] == 4 else "normal"
    stages = {m[1] for k in keys if (m := re.match(r"decode_head\.upsample_layers\.(\d+)\.", k))}
    if stages:
        return "pose" if len(stages) == 2 else "seg"
    raise CheckpointError("cannot tell which task head these transformers keys belong to: "
                          + ", ".join(keys[:5]))


def _rename(key: str, rules, to: str) -> str:
    for rule in rules:
        new = rule.apply(key, to)
        if new is not None:
            return new
    return key


# -- official -> transformers ---------------------------------------------------------------------------
def to_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official layout -> transformers layout: the names of a transformers model's own ``state_dict()``.

    (transformers 5.x ``save_pretrained`` does not write these: it reverses its conversion mapping and writes the
    official names minus ``rope_embed.periods``. ``from_pretrained`` loads either; so does ``to_official``.)

    ``w12`` is split into views (no copy); ``rope_embed.periods`` is dropped; ``tokenizer.*`` keys have no
    transformers counterpart and are kept verbatim. Raises :class:`CheckpointError` for a key with no
    transformers equivalent (e.g. an albedo head).
    """
    is_task_file = any(k.startswith("backbone.") for k in state_dict)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith("decode_head."):
            new = next((n for rules in HEAD_RULES.values() for r in rules if (n := r.apply(key, TRANSFORMERS))),
                       None)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
            continue
        rel = key[len("backbone."):] if is_task_file and key.startswith("backbone.") else key
        prefix = "model." if is_task_file else ""
        if rel == _PERIODS:
            continue
        if rel.startswith("tokenizer."):
            out[prefix + rel] = value
            continue
        m = _W12_OFFICIAL.fullmatch(rel)
        if m:
            gate, up = value.chunk(2, dim=0)
            out[f"{prefix}model.layer.{m['i']}.mlp.gate_proj.{m['p']}"] = gate
            out[f"{prefix}model.layer.{m['i']}.mlp.up_proj.{m['p']}"] = up
            continue
        new = _rename(rel, _BACKBONE_RULES, TRANSFORMERS)
        if new == rel:  # no rule matched (no rule maps a key onto itself)
            unknown.append(key)
            continue
        out[prefix + new] = value
    if unknown:
        raise CheckpointError(f"{len(unknown)} keys have no transformers equivalent (transformers has no albedo "
                              f"head): {', '.join(unknown[:8])}")
    return out
