"""Export (ONNX, torch.export) and the onnxruntime backend (issue 15).

The exporter's cost grows with the number of transformer blocks (the dynamo exporter retraces every op: ~35 CPU-s
for the 18-block ``sapiens2_tiny``), so these tests use ``sapiens2_tiny``'s widths (embed 64, 4 heads, FFN 256)
with 2 blocks, one of them grouped-query (GQA) as in the middle of every real arch, registered as an arch so that
checkpoint files of it load and infer like any other. Every op of the real archs is in it: patch embedding,
RMSNorm, QK-norm, RoPE in bfloat16, GQA, SwiGLU, LayerScale, the 4K window tokenizer, each head.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import rel_err
from sapiens2.errors import ExportedModelError, MissingExtraError, UsageError
from sapiens2.export import export_model, load_exported, read_export_metadata
from sapiens2.models.arch import ARCHS, BackboneArch
from sapiens2.models.backbone import build_backbone
from sapiens2.models.task_model import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _TwoBlockArch(BackboneArch):
    @property
    def kv_heads_per_block(self) -> tuple[int, ...]:
        return (self.num_heads, self.num_heads // 2)  # one full-attention block, one GQA block


TWO_BLOCKS = _TwoBlockArch("sapiens2_tiny2", 64, 2, 4, 256, 1)
SMALL = (64, 48)
# case -> (task, input size, 4K tokenizer)
CASES = {"backbone": ("backbone", SMALL, False), "backbone_4k": ("backbone", (128, 64), True),
         "pose": ("pose", SMALL, False), "seg": ("seg", SMALL, False), "normal": ("normal", SMALL, False),
         "pointmap": ("pointmap", (256, 192), False), "albedo": ("albedo", SMALL, False),
         "matting": ("matting", SMALL, False)}


@pytest.fixture(scope="module", autouse=True)
def two_block_arch():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ARCHS, TWO_BLOCKS.name, TWO_BLOCKS)
        yield TWO_BLOCKS


def make_model(case: str):
    task, hw, tokenizer = CASES[case]
    torch.manual_seed(len(case))
    if task == "backbone":
        return build_backbone(TWO_BLOCKS, img_size=hw, use_tokenizer=tokenizer).eval()
    return build_model(task, TWO_BLOCKS, img_size=hw).eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, two_block_arch):
    """case -> (model, onnx path, pt2 path), exported on first use."""
    folder = tmp_path_factory.mktemp("exports")
    made = {}

    def get(case):
        if case not in made:
            model = make_model(case)
            onnx_path, pt2_path = folder / f"{case}.onnx", folder / f"{case}.pt2"
            export_model(model, onnx_path, format="onnx")
            export_model(model, pt2_path, format="torch-export")
            made[case] = (model, onnx_path, pt2_path)
        return made[case]

    return get


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_and_pt2_outputs_equal_torch(case, exports):
    model, onnx_path, pt2_path = exports(case)
    task, hw, _ = CASES[case]
    torch.manual_seed(1)
    x = torch.randn(3, 3, *hw)  # a batch of 3: the exported batch dimension is dynamic (traced at 2)
    with torch.no_grad():
        expected = _outputs(model(x))
    for path in (onnx_path, pt2_path):
        got = _outputs(load_exported(path, task=task, input_size=hw)(x))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape and g.dtype == torch.float32
            assert rel_err(g, e) <= 1e-4, (path.name, rel_err(g, e))


def test_metadata_round_trip(exports):
    from sapiens2.data.specs import keypoint_info, seg_classes
    from sapiens2.runtime import PIXEL_MEAN, PIXEL_STD

    for case, names in (("pose", keypoint_info().names), ("seg", seg_classes().names), ("pointmap", ())):
        _, onnx_path, pt2_path = exports(case)
        onnx_meta, pt2_meta = read_export_metadata(onnx_path), read_export_metadata(pt2_path)
        assert (onnx_meta.task, onnx_meta.arch, onnx_meta.input_size) == (case, "sapiens2_tiny2", CASES[case][1])
        assert onnx_meta.names == names and onnx_meta.mean == PIXEL_MEAN and onnx_meta.std == PIXEL_STD
        assert onnx_meta.format == "onnx" and onnx_meta.opset == 18 and onnx_meta.dtype == "float32"
        assert pt2_meta.format == "torch-export" and pt2_meta.opset is None
        assert onnx_meta.output_names == pt2_meta.output_names == (
            ("pointmap", "scale") if case == "pointmap" else ("heatmaps",) if case == "pose" else ("logits",))
    import onnx

    proto = onnx.load(str(exports("seg")[1]))
    onnx.checker.check_model(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["task"] == "seg" and props["input_size"] == "64x48" and json.loads(props["sapiens2"])["batch"] == \
        "dynamic"


def test_int8_dynamic_and_static_stay_within_bound(exports, tmp_path):
    """int8 (dynamic: weights per channel, activations per tensor at run time; static: QDQ from calibration images)
    against the float32 export of the same seg model. Bound: each quantised MatMul adds a relative error of about
    one int8 step (1/127 of the weight channel range, 1/255 of the activation range, ~0.5 % rms); the 2 blocks x 6
    MatMuls and the head compound to a few percent, so 10 % relative L2 on the logits and 95 % of argmax labels kept
    (a failure means the quantisation broke the model, not rounding)."""
    from sapiens2.io import write_png

    model, _, _ = exports("seg")
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib"
    for i in range(3):
        write_png(calib / f"{i}.png", rng.integers(0, 256, (80, 60, 3), dtype=np.uint8))
    torch.manual_seed(2)
    x = torch.randn(2, 3, *SMALL)
    with torch.no_grad():
        ref = model(x)
    for name, options in (("dynamic", {}), ("static", {"calibrate": calib})):
        path = tmp_path / f"seg_int8_{name}.onnx"
        result = export_model(model, path, format="onnx", dtype="int8", **options)
        assert result.metadata.quantization == name and read_export_metadata(path).dtype == "int8"
        got = load_exported(path, task="seg")(x)
        assert rel_err(got, ref) <= 0.10, (name, rel_err(got, ref))
        assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
        import onnx

        ops = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert ({"MatMulInteger", "DynamicQuantizeLinear"} if name == "dynamic" else {"QuantizeLinear"}) <= ops


def _checkpoint(folder: Path, task: str, seed: int) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = build_model(task, TWO_BLOCKS, img_size=SMALL)
    path = folder / f"tiny2_{task}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_predict_onnxruntime_writes_what_torch_writes(tmp_path, monkeypatch):
    """pose from a file made by `sapiens2 export`, seg exported on first use into the cache; same files as torch."""
    from sapiens2.cli.main import main
    from sapiens2.io import read_image, write_png

    pose_ckpt, seg_ckpt = _checkpoint(tmp_path, "pose", 0), _checkpoint(tmp_path, "seg", 1)
    image = tmp_path / "in" / "person.png"
    rng = np.random.default_rng(3)
    write_png(image, rng.integers(0, 256, (96, 72, 3), dtype=np.uint8))
    pose_onnx = tmp_path / "pose.onnx"
    assert main(["export", "--task", "pose", "--checkpoint", str(pose_ckpt), "-o", str(pose_onnx)]) == 0
    monkeypatch.setenv("SAPIENS2_EXPORT_CACHE", str(tmp_path / "cache"))
    common = ["predict", "--detector", "none", "--input-size", "64x48", "--device", "cpu", str(image)]
    assert main(common + ["--checkpoint", f"pose={pose_ckpt}", "--checkpoint", f"seg={seg_ckpt}",
                          "-o", str(tmp_path / "torch")]) == 0
    assert main(common + ["--backend", "onnxruntime", "--checkpoint", f"pose={pose_onnx}", "--checkpoint",
                          f"seg={seg_ckpt}", "-o", str(tmp_path / "ort")]) == 0
    cached = list((tmp_path / "cache").glob("seg-64x48-float32-*.onnx"))
    assert len(cached) == 1 and read_export_metadata(cached[0]).source["file"] == str(seg_ckpt.resolve())

    torch_pose = json.loads((tmp_path / "torch" / "person.pose.json").read_text())
    ort_pose = json.loads((tmp_path / "ort" / "person.pose.json").read_text())
    a = np.array([p["keypoints"] for p in torch_pose["people"]], dtype=float)
    b = np.array([p["keypoints"] for p in ort_pose["people"]], dtype=float)
    assert a.shape == b.shape and a.shape[0] >= 1
    # heatmaps agree to ~1e-6 relative: decoded points within 0.01 px, scores within 1e-4
    assert np.abs(a[..., :2] - b[..., :2]).max() <= 1e-2 and np.abs(a[..., 2] - b[..., 2]).max() <= 1e-4
    seg_t, seg_o = read_image(tmp_path / "torch" / "person.seg.png"), read_image(tmp_path / "ort" / "person.seg.png")
    assert seg_t.shape == seg_o.shape and (seg_t == seg_o).mean() >= 0.999


# ---------------------------------------------------------------------------------------------- bad input
def test_exported_file_mismatches_are_clear_errors(exports, tmp_path):
    import onnx

    _, pose_onnx, pose_pt2 = exports("pose")
    with pytest.raises(ExportedModelError, match="exported pose model, not seg"):
        load_exported(pose_onnx, task="seg")
    with pytest.raises(ExportedModelError, match="exported for input size 64x48, not 128x96.*--input-size 64x48"):
        load_exported(pose_pt2, input_size=(128, 96))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx file\xff" * 10)
    with pytest.raises(ExportedModelError, match="not an ONNX"):
        load_exported(garbage)
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(pose_onnx))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(ExportedModelError, match="no sapiens2 metadata"):
        load_exported(foreign)
    proto = onnx.load(str(pose_onnx))
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 99
    onnx.save(proto, str(tmp_path / "opset99.onnx"))
    with pytest.raises(ExportedModelError, match="metadata says ONNX opset 18 but the graph imports opset 99"):
        load_exported(tmp_path / "opset99.onnx")
    meta = json.loads(next(p.value for p in proto.metadata_props if p.key == "sapiens2"))
    next(p for p in proto.metadata_props if p.key == "sapiens2").value = json.dumps({**meta, "opset": 99})
    onnx.save(proto, str(tmp_path / "opset99b.onnx"))
    with pytest.raises(ExportedModelError, match="onnxruntime .* cannot load it \\(opset 99"):
        load_exported(tmp_path / "opset99b.onnx")
    with pytest.raises(ExportedModelError, match="does not exist"):
        load_exported(tmp_path / "missing.onnx")


def test_bad_export_requests_are_clear_errors(tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from sapiens2.cli.main import main

    ckpt = _checkpoint(tmp_path, "seg", 0)
    out = tmp_path / "x.onnx"
    # unsupported dtype / format combinations: usage errors (status 2), nothing written
    assert main(["export", "--task", "seg", "--checkpoint", str(ckpt), "--dtype", "bfloat16", "-o", str(out)]) == 2
    assert "ONNX Runtime has no bfloat16 kernels" in capsys.readouterr().err
    assert main(["export", "--task", "seg", "--checkpoint", str(ckpt), "--calibrate", str(tmp_path), "-o",
                 str(out)]) == 2
    assert main(["export", "--task", "seg", "--checkpoint", str(ckpt), "--format", "torch-export", "-o",
                 str(out)]) == 2
    assert "ends in .pt2" in capsys.readouterr().err
    assert main(["predict", "--backend", "onnxruntime", "--dtype", "bfloat16", "--checkpoint", f"seg={ckpt}",
                 str(ckpt), "-o", str(tmp_path / "o")]) == 2
    assert "runs the precision of its exported file" in capsys.readouterr().err
    # the wrong task for the file, and a checkpoint whose arch cannot be inferred
    assert main(["export", "--task", "pose", "--checkpoint", str(ckpt), "-o", str(out)]) == 1
    assert "seg head, not a pose head" in capsys.readouterr().err
    torch.manual_seed(0)
    odd = build_backbone(BackboneArch("odd", 48, 1, 4, 96, 1), img_size=SMALL)
    save_file({k: v.contiguous() for k, v in odd.state_dict().items()}, str(tmp_path / "odd.safetensors"))
    assert main(["export", "--task", "backbone", "--checkpoint", str(tmp_path / "odd.safetensors"), "-o",
                 str(out)]) == 1
    assert "match no Sapiens2 arch" in capsys.readouterr().err
    # TensorRT is not installed here (and there is no GPU): the message names the extra or the GPU
    assert main(["export", "--task", "seg", "--checkpoint", str(ckpt), "--format", "tensorrt", "-o",
                 str(tmp_path / "x.engine")]) == 1
    err = capsys.readouterr().err
    assert "sapiens2[tensorrt]" in err or "needs a CUDA" in err or "has none" in err
    assert not out.exists() and not (tmp_path / "x.engine").exists()
    # a missing extra names it
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"sapiens2\[onnx\]"):
        export_model(make_model("seg"), out)
    assert not out.exists()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    """A failure while writing leaves neither the file nor a temporary sibling."""
    import onnx

    def broken_save(proto, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save", broken_save)
    from sapiens2.export.exporter import save_onnx

    proto = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    with pytest.raises(OSError, match="disk full"):
        save_onnx(proto, tmp_path / "m.onnx", None)
    assert list(tmp_path.iterdir()) == []


def test_backend_usage_errors():
    from sapiens2.inference.backends import check_backend

    with pytest.raises(UsageError, match="unknown backend 'tflite'"):
        check_backend("tflite", "float32")
    assert check_backend("ONNXRuntime", "float32") == "onnxruntime"
