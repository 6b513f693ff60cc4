"""Recover the task and the head's channel layout from the shapes of ``decode_head.*`` tensors.

Only ``.shape`` of each value is read, so real tensors, meta tensors or safetensors slices all work.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...errors import ArchMismatchError, CheckpointError
from .config import DeconvHeadConfig, DenseHeadConfig, HeadConfig, PointmapHeadConfig, check_task
from .task_table import TASK_TABLE, task_spec

HEAD_PREFIX = "decode_head."

# The predictor conv's official name tells the task apart (kept for callers; the table is the source).
PREDICTOR_NAMES: dict[str, str] = {spec.name: spec.predictor_name for spec in TASK_TABLE}


def _shape(value: Any) -> tuple[int, ...]:
    if hasattr(value, "shape"):
        return tuple(int(s) for s in value.shape)
    if hasattr(value, "get_shape"):  # safetensors PySafeSlice
        return tuple(int(s) for s in value.get_shape())
    raise CheckpointError(f"cannot read a shape from a {type(value).__name__}")


def head_shapes(state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """``decode_head.*`` entries as {key without the prefix: shape}."""
    return {k[len(HEAD_PREFIX):]: _shape(v) for k, v in state_dict.items() if k.startswith(HEAD_PREFIX)}


def infer_task(state_dict: Mapping[str, Any]) -> str:
    """The task of an official-layout task state dict, from its predictor conv's name."""
    shapes = head_shapes(state_dict)
    if not shapes:
        if any(k.startswith("model.") for k in state_dict):
            hint = "it looks like a Hugging Face transformers layout; convert it to the official layout first"
        elif any(k.startswith(("blocks.", "backbone.", "patch_embed.")) for k in state_dict):
            hint = "it looks like a backbone-only (pretrain) checkpoint, which has no task head"
        else:
            hint = "it does not look like a Sapiens2 task checkpoint"
        raise CheckpointError(f"no 'decode_head.*' keys in the state dict: {hint}")
    found = [spec.name for spec in TASK_TABLE if f"{spec.predictor_name}.weight" in shapes]
    if len(found) == 1:
        return found[0]
    if not found and "predictor.weight" in shapes:
        raise CheckpointError("decode_head has a 'predictor' (Hugging Face transformers layout); convert it to "
                              "the official layout first")
    predictors = sorted(k for k in shapes if re.fullmatch(r"conv_\w+\.weight", k))
    raise CheckpointError(
        f"unrecognised task head: expected exactly one of "
        f"{', '.join('decode_head.' + s.predictor_name + '.weight' for s in TASK_TABLE)}; "
        f"found {predictors or 'none'}")


def _indexed(shapes: dict[str, tuple[int, ...]], pattern: str) -> list[tuple[int, tuple[int, ...]]]:
    """(index, shape) of keys matching ``pattern`` (with one ``(\\d+)`` group), sorted by index."""
    rx = re.compile(pattern)
    found = []
    for key, shape in shapes.items():
        m = rx.fullmatch(key)
        if m:
            found.append((int(m.group(1)), shape))
    return sorted(found)


def _stack(shapes: dict[str, tuple[int, ...]], name: str, step: int = 3, transposed: bool = False
           ) -> tuple[tuple[int, ...], tuple[int, ...], int | None]:
    """(out channels, kernel sizes, in channels of the first layer) of a conv/norm/act Sequential."""
    entries = _indexed(shapes, rf"{re.escape(name)}\.(\d+)\.weight")
    if [i for i, _ in entries] != [step * n for n in range(len(entries))]:
        raise CheckpointError(f"decode_head.{name} has conv weights at indices {[i for i, _ in entries]}; "
                              f"expected 0, {step}, {2 * step}, ...")
    outs, kernels = [], []
    for _, shape in entries:
        if len(shape) != 4:
            raise CheckpointError(f"decode_head.{name} holds a weight of shape {shape}; expected a 4-D conv weight")
        outs.append(shape[1] if transposed else shape[0])
        kernels.append(shape[2])
    first_in = None
    if entries:
        first = entries[0][1]
        first_in = first[0] if transposed else first[1]
    return tuple(outs), tuple(kernels), first_in


def _require(shapes: dict[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"decode_head.{key} is missing from the state dict")
    return shapes[key]


def _infer_deconv(task: str, shapes: dict[str, tuple[int, ...]]) -> DeconvHeadConfig:
    pred = _require(shapes, f"{task_spec(task).predictor_name}.weight")
    d_out, d_k, d_in = _stack(shapes, "deconv_layers", transposed=True)
    c_out, c_k, c_in = _stack(shapes, "conv_layers")
    in_channels = d_in if d_in is not None else (c_in if c_in is not None else pred[1])
    return DeconvHeadConfig(in_channels=in_channels, out_channels=pred[0], deconv_out_channels=d_out,
                            deconv_kernel_sizes=d_k, conv_out_channels=c_out, conv_kernel_sizes=c_k)


def _infer_dense(task: str, shapes: dict[str, tuple[int, ...]]) -> DenseHeadConfig:
    pred = _require(shapes, f"{task_spec(task).predictor_name}.weight")
    in_channels = _require(shapes, "input_conv.0.weight")[1]
    blocks = _indexed(shapes, r"upsample_blocks\.(\d+)\.0\.weight")
    if [i for i, _ in blocks] != list(range(len(blocks))):
        raise CheckpointError(f"decode_head.upsample_blocks indices {[i for i, _ in blocks]} are not 0, 1, 2, ...")
    for i, shape in blocks:
        if len(shape) != 4 or shape[0] % 4:
            raise CheckpointError(f"decode_head.upsample_blocks.{i}.0.weight has shape {shape}; expected a conv "
                                  f"to 4x the stage's channels (PixelShuffle 2)")
    upsample = tuple(shape[0] // 4 for _, shape in blocks)
    c_out, c_k, _ = _stack(shapes, "conv_layers")
    common = dict(in_channels=in_channels, out_channels=pred[0], upsample_channels=upsample,
                  conv_out_channels=c_out, conv_kernel_sizes=c_k)
    if task != "pointmap":
        return DenseHeadConfig(**common)
    s_out, s_k, _ = _stack(shapes, "scale_conv_layers")
    linears = _indexed(shapes, r"scale_final_layer\.(\d+)\.weight")
    if not linears or [i for i, _ in linears] != [1 + 2 * n for n in range(len(linears))]:
        raise CheckpointError(f"decode_head.scale_final_layer has Linear weights at indices "
                              f"{[i for i, _ in linears]}; expected 1, 3, 5, ...")
    sizes = [linears[0][1][1]] + [shape[0] for _, shape in linears]
    if sizes[-1] != 1:
        raise CheckpointError(f"the pointmap scale MLP ends in {sizes[-1]} outputs; expected 1")
    return PointmapHeadConfig(**common, scale_conv_out_channels=s_out, scale_conv_kernel_sizes=s_k,
                              scale_hidden_features=tuple(sizes[1:-1]), scale_in_features=sizes[0])


def infer_head_config(task: str, state_dict: Mapping[str, Any]) -> HeadConfig:
    """The head config whose module has exactly the ``decode_head.*`` keys and shapes of ``state_dict``.

    Raises CheckpointError (ArchMismatchError with the key lists when shapes disagree) if the head does not
    fit the task's official layout.
    """
    task = check_task(task)
    shapes = head_shapes(state_dict)
    if not shapes:
        raise CheckpointError("no 'decode_head.*' keys in the state dict")
    try:
        config = _infer_deconv(task, shapes) if task_spec(task).is_deconv else _infer_dense(task, shapes)
    except ValueError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"decode_head does not form a valid {task} head: {exc}") from exc
    _check_head_keys(task, config, shapes)
    return config


def _check_head_keys(task: str, config: HeadConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Build the head on the meta device and compare key sets and shapes with the checkpoint's."""
    from . import build_head  # local: build_head lives in the package __init__

    expected = {k: tuple(v.shape) for k, v in build_head(task, config, device="meta").state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    mismatched = {k: (shapes[k], expected[k]) for k in set(expected) & set(shapes) if shapes[k] != expected[k]}
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(HEAD_PREFIX + k for k in missing[:6])}"
                         + (" ..." if len(missing) > 6 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(HEAD_PREFIX + k for k in unexpected[:6])}"
                         + (" ..." if len(unexpected) > 6 else ""))
        if mismatched:
            k = sorted(mismatched)[0]
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {HEAD_PREFIX}{k} "
                         f"{mismatched[k][0]} vs {mismatched[k][1]}")
        raise ArchMismatchError(f"decode_head is not an official {task} head: " + "; ".join(parts),
                                missing=[HEAD_PREFIX + k for k in missing],
                                unexpected=[HEAD_PREFIX + k for k in unexpected],
                                mismatched={HEAD_PREFIX + k: v for k, v in mismatched.items()})


__all__ = ["HEAD_PREFIX", "PREDICTOR_NAMES", "head_shapes", "infer_head_config", "infer_task"]
