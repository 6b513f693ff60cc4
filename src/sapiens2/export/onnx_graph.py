"""Passes over an exported ONNX graph (the ``onnx`` protobuf): lowering bfloat16 arithmetic to float32.

The official RoPE computes in bfloat16 (``models/rope.py``); the exported graph then holds bfloat16 ``Mul``,
``Add``, ``Sin``... that ONNX Runtime's CPU kernels do not implement. :func:`lower_bfloat16` rewrites each such node
to compute in float32 between a cast up of its bfloat16 inputs and a cast down (round to nearest even) of its
outputs. That is exactly how torch runs a bfloat16 elementwise op on the CPU (compute in float32, round the
result), so the exported model keeps the official numerics bit for bit; only ``Cast`` nodes still see bfloat16.
"""
from __future__ import annotations

from typing import Any

_CAST_OPS = ("Cast", "CastLike")


def _value_types(graph) -> dict[str, tuple[str, int]]:
    """name -> ("tensor" | "sequence" | "other", element type) of every value the graph declares."""
    from onnx import TensorProto

    out: dict[str, tuple[str, int]] = {}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        kind = vi.type.WhichOneof("value")
        if kind == "tensor_type":
            out[vi.name] = ("tensor", vi.type.tensor_type.elem_type)
        elif kind == "sequence_type":
            elem = vi.type.sequence_type.elem_type
            out[vi.name] = ("sequence", elem.tensor_type.elem_type if elem.HasField("tensor_type") else 0)
    for init in graph.initializer:
        out[init.name] = ("tensor", init.data_type)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = ("tensor", attr.t.data_type)
    out.pop("", None)
    del TensorProto
    return out


def lower_bfloat16(model: Any) -> int:
    """Rewrite, in place, every non-cast node of ``model`` (an ``onnx.ModelProto``) that reads or writes bfloat16
    tensors to compute in float32 with casts around it; returns how many nodes were rewritten."""
    import onnx
    from onnx import TensorProto, helper

    inferred = onnx.shape_inference.infer_shapes(model)
    types = _value_types(inferred.graph)
    bf16 = TensorProto.BFLOAT16
    new_nodes = []
    rewritten = 0
    counter = 0
    for node in model.graph.node:
        touches = [types.get(name, ("", 0))[1] == bf16 for name in list(node.input) + list(node.output)]
        if node.op_type in _CAST_OPS or node.op_type == "Constant" or not any(touches):
            new_nodes.append(node)
            continue
        rewritten += 1
        for i, name in enumerate(node.input):
            kind, elem = types.get(name, ("", 0))
            if name and kind == "tensor" and elem == bf16:
                counter += 1
                up = f"{name}__f32_{counter}"
                new_nodes.append(helper.make_node("Cast", [name], [up], to=TensorProto.FLOAT,
                                                  name=f"lower_bf16_up_{counter}"))
                node.input[i] = up
        downs = []
        for i, name in enumerate(node.output):
            kind, elem = types.get(name, ("", 0))
            if name and kind == "tensor" and elem == bf16:
                counter += 1
                wide = f"{name}__f32_{counter}"
                node.output[i] = wide
                downs.append(helper.make_node("Cast", [wide], [name], to=bf16, name=f"lower_bf16_down_{counter}"))
        new_nodes.append(node)
        new_nodes.extend(downs)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        del model.graph.value_info[:]  # stale for the rewritten values; ONNX Runtime infers its own
    return rewritten
