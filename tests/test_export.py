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
# the dense heads at 64x48; pointmap alone at 256x192, the smallest input its scale branch takes (the five dense
# heads at that size cost 20 CPU-s per forward), on a batch of 1 (~3 CPU-s per forward there)
GROUPS = {"heads": (("pose", "seg", "normal", "albedo", "matting"), SMALL, 3), "pointmap": (("pointmap",), (256, 192), 1)}


@pytest.fixture(scope="module", autouse=True)
def two_block_arch(tmp_path_factory):
    """The 2-block arch registered, and the export cache in a temporary folder (never the user's)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ARCHS, TWO_BLOCKS.name, TWO_BLOCKS)
        mp.setenv("SAPIENS2_EXPORT_CACHE", str(tmp_path_factory.mktemp("export-cache")))
        yield TWO_BLOCKS


class AllHeads(torch.nn.Module):
    """One backbone feeding the six task heads, each built as its task model builds it: one export covers every
    head's ops (the exporter's cost is per traced op, and each task model would repeat the backbone)."""

    def __init__(self, tasks, hw):
        super().__init__()
        torch.manual_seed(0)
        self.tasks = tasks
        self.backbone = build_backbone(TWO_BLOCKS, img_size=hw)
        self.heads = torch.nn.ModuleDict({t: build_model(t, TWO_BLOCKS, img_size=hw).decode_head for t in tasks})

    def forward(self, x):
        features = self.backbone(x)
        outs = [features]
        for task in self.tasks:
            out = self.heads[task](features)
            outs.extend(out if isinstance(out, tuple) else (out,))
        return tuple(outs)


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.fixture(scope="module")
def exported_heads(tmp_path_factory, two_block_arch):
    """group -> (folder, outputs, input, torch outputs): a backbone with the group's heads, exported once through the
    same steps as export_model, as .onnx and .pt2 (each group exported on first use, once per module)."""
    from dataclasses import replace

    from sapiens2.export.exporter import export_program, save_onnx, to_onnx_proto
    from sapiens2.export.metadata import OUTPUTS, ExportMetadata

    done = {}

    def get(group):
        if group not in done:
            tasks, hw, n = GROUPS[group]
            folder = tmp_path_factory.mktemp(group)
            model = AllHeads(tasks, hw).eval()
            outputs = OUTPUTS["backbone"] + tuple(replace(o, name=f"{t}_{o.name}") for t in tasks for o in OUTPUTS[t])
            meta = ExportMetadata(task="heads", arch=TWO_BLOCKS.name, input_size=hw, batch="dynamic", format="onnx",
                                  dtype="float32", outputs=outputs, mean=(0.0,) * 3, std=(1.0,) * 3, opset=18)
            program = export_program(model, hw, "dynamic", torch.float32)
            save_onnx(to_onnx_proto(program, meta), folder / f"{group}.onnx", meta)
            torch.export.save(program, str(folder / f"{group}.pt2"), extra_files={"sapiens2.json": meta.to_json()})
            torch.manual_seed(1)
            x = torch.randn(n, 3, *hw)  # the batch dimension is dynamic, traced at 2
            with torch.no_grad():
                expected = model(x)
            assert len(expected) == len(outputs)
            done[group] = folder, outputs, x, expected
        return done[group]

    return get


@pytest.mark.parametrize("group, suffix", [("heads", ".onnx"), ("heads", ".pt2"), ("pointmap", ".onnx"),
                                           ("pointmap", ".pt2")])
def test_every_head_exports_equal_to_torch(exported_heads, group, suffix):
    """Backbone + pose, seg, normal, albedo, matting heads (RMSNorm, QK-norm, bfloat16 RoPE, GQA, SwiGLU, deconv/conv
    heads), and pointmap (two outputs; the scale branch's InstanceNorm convs and MLP): ONNX Runtime and the loaded
    .pt2 give the torch outputs within 1e-4 relative, on a batch other than the traced one."""
    folder, outputs, x, expected = exported_heads(group)
    got = _outputs(load_exported(folder / f"{group}{suffix}")(x))
    assert len(got) == len(expected)
    for g, e, spec in zip(got, expected, outputs):
        assert g.shape == e.shape and g.dtype == torch.float32
        assert rel_err(g, e) <= 1e-4, (group, suffix, spec.name, rel_err(g, e))


@pytest.fixture(scope="module")
def backbone_4k(tmp_path_factory, two_block_arch):
    """The 4K tokenizer backbone (inputs in multiples of 64) exported by export_model as .onnx and .pt2."""
    folder = tmp_path_factory.mktemp("exports")
    torch.manual_seed(4)
    model = build_backbone(TWO_BLOCKS, img_size=(128, 64), use_tokenizer=True).eval()
    export_model(model, folder / "bb4k.onnx", format="onnx")
    export_model(model, folder / "bb4k.pt2", format="torch-export")
    return model, folder / "bb4k.onnx", folder / "bb4k.pt2"


def test_4k_backbone_onnx_and_pt2_equal_torch_and_keep_metadata(backbone_4k):
    import onnx

    from sapiens2.runtime import PIXEL_MEAN, PIXEL_STD

    model, onnx_path, pt2_path = backbone_4k
    torch.manual_seed(1)
    x = torch.randn(3, 3, 128, 64)
    with torch.no_grad():
        expected = model(x)
    for path in (onnx_path, pt2_path):
        got = load_exported(path, task="backbone", input_size=(128, 64))(x)
        assert got.shape == expected.shape == (3, 64, 2, 1) and rel_err(got, expected) <= 1e-4
    onnx_meta, pt2_meta = read_export_metadata(onnx_path), read_export_metadata(pt2_path)
    for meta in (onnx_meta, pt2_meta):
        assert (meta.task, meta.arch, meta.input_size, meta.use_tokenizer) == ("backbone", "sapiens2_tiny2",
                                                                               (128, 64), True)
        assert meta.mean == PIXEL_MEAN and meta.std == PIXEL_STD and meta.output_names == ("features",)
        assert meta.rope_dtype == "bfloat16" and meta.batch == "dynamic" and meta.dtype == "float32"
    assert (onnx_meta.format, onnx_meta.opset, pt2_meta.format, pt2_meta.opset) == ("onnx", 18, "torch-export", None)
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["task"] == "backbone" and props["input_size"] == "128x64"
    assert json.loads(props["sapiens2"])["use_tokenizer"] is True


@pytest.fixture(scope="module")
def trained_seg(tmp_path_factory, two_block_arch):
    """A 2-block seg model trained briefly on synthetic humans (the learning tests' recipe, fewer images and
    steps), with its held-out set (another generator seed) and its training images (for calibration)."""
    from sapiens2.checkpoints import load_model
    from sapiens2.data.synth import write_dataset
    from sapiens2.training.config import load_config
    from sapiens2.training.trainer import Trainer

    root = tmp_path_factory.mktemp("int8")
    train = write_dataset(root / "train", num=INT8_TRAIN, seed=0, height=64, width=48, max_people=1, progress=False)
    held = write_dataset(root / "held", num=INT8_HELD_OUT, seed=1, height=64, width=48, max_people=1, progress=False)
    sets = {"data.train": str(train), "data.val": str(held), "data.input_size": "[64,48]", "data.batch_size": 4,
            "data.num_workers": 0, "data.augment": "false", "optim.lr": 2e-2, "optim.warmup_iters": 5,
            "optim.layer_decay_rate": 1.0, "progress": "false", "output_dir": str(root / "run"), "save_every": 0,
            "eval_every": 0, "log_every": 1000, "device": "cpu", "num_iters": INT8_STEPS, "loss.class_weight": "null"}
    result = Trainer(load_config("seg", TWO_BLOCKS.name, overrides=[f"{k}={v}" for k, v in sets.items()])).fit()
    assert np.mean(result.losses[-4:]) < 0.7 * np.mean(result.losses[:4])  # it did learn something
    return load_model(root / "run" / "model.safetensors", task="seg").eval(), train, held


INT8_TRAIN, INT8_HELD_OUT, INT8_STEPS = 16, 8, 16


def test_int8_of_a_trained_model_stays_within_bound(trained_seg, tmp_path):
    """int8 dynamic (MatMul weights int8 per output channel, activations uint8 per tensor at run time) and static
    (QDQ, activation ranges calibrated on training images through the seg preprocessing), quantised from one float32
    export, against torch float32 on held-out synthetic humans. Bound: each quantised MatMul adds about one int8 step
    of relative error (1/127 of a weight channel's range, 1/255 of an activation range: ~0.5 % rms); 2 blocks x 6
    MatMuls (+ the head's convs, static) compound to a few percent, so <= 10 % relative L2 on the logits and >= 95 %
    of the pixels keep their float32 label; the held-out mIoU moves by at most 3 points (benchmarks/int8_quality.py
    measures the full-size tiny models)."""
    import onnx

    from sapiens2.data.collate import collate
    from sapiens2.evaluation.runner import evaluate
    from sapiens2.export.exporter import quantize_exported
    from sapiens2.training.datasets import build_dataset

    model, train, held = trained_seg
    fp32, dyn, static = tmp_path / "fp32.onnx", tmp_path / "dyn.onnx", tmp_path / "static.onnx"
    export_model(model, fp32, format="onnx")
    assert quantize_exported(fp32, dyn).metadata.quantization == "dynamic"
    assert quantize_exported(fp32, static, calibrate=train / "images", max_calibration_images=8).metadata \
        .quantization == "static"
    ops = {p: {node.op_type for node in onnx.load(str(p)).graph.node} for p in (dyn, static)}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops[dyn]  # the weights really are int8
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops[static]
    assert read_export_metadata(dyn).dtype == read_export_metadata(static).dtype == "int8"
    dataset = build_dataset("seg", held, train=False, input_hw=SMALL)
    x = collate([dataset[i] for i in range(len(dataset))])["image"]
    with torch.no_grad():
        ref = model(x)
    base = evaluate(model, dataset)["mIoU"]
    for path in (dyn, static):
        quantised = load_exported(path, task="seg")
        got = quantised(x)
        agree = (got.argmax(1) == ref.argmax(1)).float().mean().item()
        drop = base - evaluate(quantised, dataset, device="cpu")["mIoU"]
        print(f"{path.name}: rel {rel_err(got, ref):.4f}, labels kept {agree:.4f}, mIoU {base:.2f} drop {drop:.2f}")
        assert 0 < rel_err(got, ref) <= 0.10 and agree >= 0.95 and abs(drop) <= 3.0, (path.name, rel_err(got, ref),
                                                                                        agree, drop)


def _checkpoint(folder: Path, task: str, seed: int) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = build_model(task, TWO_BLOCKS, img_size=SMALL)
    path = folder / f"tiny2_{task}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_predict_onnxruntime_writes_what_torch_writes(tmp_path, monkeypatch):
    """pose from a file made by `sapiens2 export`, seg exported on first use into the cache; same files as torch.
    A second run hits the cache without loading the torch checkpoint."""
    from sapiens2.cli.main import main
    from sapiens2.io import read_image, write_png

    pose_ckpt, seg_ckpt = _checkpoint(tmp_path, "pose", 0), _checkpoint(tmp_path, "seg", 1)
    image = tmp_path / "in" / "person.png"
    rng = np.random.default_rng(3)
    write_png(image, rng.integers(0, 256, (96, 72, 3), dtype=np.uint8))
    pose_onnx = tmp_path / "pose.onnx"
    assert main(["export", "--task", "pose", "--checkpoint", str(pose_ckpt), "--input-size", "64x48", "-o",
                 str(pose_onnx)]) == 0
    monkeypatch.setenv("SAPIENS2_EXPORT_CACHE", str(tmp_path / "cache"))
    common = ["predict", "--detector", "none", "--input-size", "64x48", "--device", "cpu", str(image)]
    assert main(common + ["--checkpoint", f"pose={pose_ckpt}", "--checkpoint", f"seg={seg_ckpt}",
                          "-o", str(tmp_path / "torch")]) == 0
    assert main(common + ["--backend", "onnxruntime", "--checkpoint", f"pose={pose_onnx}", "--checkpoint",
                          f"seg={seg_ckpt}", "-o", str(tmp_path / "ort")]) == 0
    assert len(read_export_metadata(pose_onnx).names) == 308
    cached = list((tmp_path / "cache").glob("seg-64x48-float32-*.onnx"))
    assert len(cached) == 1 and read_export_metadata(cached[0]).source["file"] == str(seg_ckpt.resolve())

    torch_pose = json.loads((tmp_path / "torch" / "person.pose.json").read_text())
    ort_pose = json.loads((tmp_path / "ort" / "person.pose.json").read_text())
    a = np.array([p["keypoints"] for p in torch_pose["people"]], dtype=float)
    b = np.array([p["keypoints"] for p in ort_pose["people"]], dtype=float)
    assert a.shape == b.shape and a.shape[0] >= 1
    # heatmaps agree to ~1e-6 relative; the file rounds to 0.01 px. Random-weight heatmaps are nearly flat, so a
    # near-tie may move the odd keypoint's peak: 98 % of the points agree to the file's rounding
    close = np.abs(a[..., :2] - b[..., :2]).max(-1) <= 0.011
    assert close.mean() >= 0.98 and np.abs(a[..., 2] - b[..., 2]).max() <= 1e-3
    seg_t, seg_o = read_image(tmp_path / "torch" / "person.seg.png"), read_image(tmp_path / "ort" / "person.seg.png")
    assert seg_t.shape == seg_o.shape and (seg_t == seg_o).mean() >= 0.999

    # the cache hit: no checkpoint is read (the key is the file's identity and the requested size)
    import sapiens2.checkpoints
    import sapiens2.export.exporter
    from sapiens2.inference.backends import load_backend_model

    def no_loading(*args, **kwargs):
        raise AssertionError("the torch checkpoint was loaded on an export-cache hit")

    monkeypatch.setattr(sapiens2.export.exporter, "load_for_export", no_loading)
    monkeypatch.setattr(sapiens2.checkpoints, "load_model", no_loading)
    hit = load_backend_model("onnxruntime", "seg", seg_ckpt, input_size=SMALL, device=torch.device("cpu"),
                             export_cache=tmp_path / "cache")
    assert hit.path == cached[0] and hit.img_size == SMALL


# ---------------------------------------------------------------------------------------------- bad input
def test_exported_file_mismatches_are_clear_errors(backbone_4k, tmp_path):
    import onnx

    _, pose_onnx, pose_pt2 = backbone_4k
    with pytest.raises(ExportedModelError, match="exported backbone model, not seg"):
        load_exported(pose_onnx, task="seg")
    with pytest.raises(ExportedModelError, match="exported for input size 128x64, not 128x96.*--input-size 128x64"):
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
        export_model(build_backbone(TWO_BLOCKS, img_size=SMALL), out)
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


def test_benchmark_runs_the_onnxruntime_backend(tmp_path):
    """``sapiens2 benchmark --backend onnxruntime``: the rows are timed on the exported graph, the float32 outputs
    equal the torch model's (relative error within float32 rounding of the graph), FLOPs are those counted on torch;
    one float32 export (dynamic batch) serves both batch sizes and the int8 file is quantised from it once."""
    from sapiens2.cli.main import main

    cache = tmp_path / "cache"
    code = main(["benchmark", "--task", "seg", "--random-weights", TWO_BLOCKS.name, "--input-size", "64x48",
                 "--backend", "torch,onnxruntime", "--dtype", "float32,int8", "--batch-size", "1,2", "--iters", "1",
                 "--warmup", "0", "--no-ceiling", "--device", "cpu", "--export-cache", str(cache), "-o",
                 str(tmp_path / "out")])
    assert code == 0
    rows = {(r["backend"], r["dtype"], r["batch_size"]): r
            for r in json.loads((tmp_path / "out" / "benchmark.json").read_text())["rows"]}
    for n in (1, 2):
        ort, ref = rows["onnxruntime", "float32", n], rows["torch", "float32", n]
        assert ort["status"] == "ok" and "ONNX Runtime float32" in ort["note"] and ort["rel_error"] < 1e-4
        assert ort["flops_per_item"] == ref["flops_per_item"] > 0
        assert rows["onnxruntime", "int8", n]["status"] == "ok"
        assert "dynamic int8" in rows["onnxruntime", "int8", n]["note"]
    assert "exported in" in rows["onnxruntime", "float32", 1]["note"]
    assert "cached export" in rows["onnxruntime", "float32", 2]["note"]
    assert len(list(cache.glob("seg-64x48-float32-*.onnx"))) == 1
    assert len(list(cache.glob("seg-64x48-int8-dynamic-*.onnx"))) == 1


def test_benchmark_help_shows_benchmark_options_only(capsys):
    from sapiens2.cli.main import main

    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    text = capsys.readouterr().out
    assert "--export-cache" in text and "--random-weights" in text and "--checkpoint" in text
    assert "--detector" not in text and "--flip-test" not in text and "--seg-probs" not in text


# ---------------------------------------------------------------------------------------------- TensorRT
def _engine_meta(**engine):
    from sapiens2.export.metadata import OUTPUTS, ExportMetadata

    return ExportMetadata(task="seg", arch=TWO_BLOCKS.name, input_size=SMALL, batch="dynamic", format="tensorrt",
                          dtype="bfloat16", outputs=OUTPUTS["seg"], mean=(0.0,) * 3, std=(1.0,) * 3, engine=engine)


H100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt": "10.3.0", "batch_range": [1, 32]}


def test_tensorrt_engine_header_and_target_checks(tmp_path):
    """The engine file's header round-trips; an engine from another GPU, compute capability or TensorRT version is
    refused naming the fix; a bare plan or a truncated header is not taken for an engine."""
    from sapiens2.export.tensorrt import MAGIC, check_engine_target, plan_bytes, write_engine

    path = tmp_path / "seg.engine"
    write_engine(path, b"\x01fake plan\x00", _engine_meta(**H100))
    meta = read_export_metadata(path)
    assert meta.engine == H100 and meta.format == "tensorrt" and meta.dtype == "bfloat16"
    assert plan_bytes(path) == b"\x01fake plan\x00"
    check_engine_target(meta, path, {k: H100[k] for k in ("gpu", "compute_capability", "tensorrt")})  # same: fine
    for key, other, said in (("gpu", "NVIDIA H200", "GPU 'NVIDIA H100 80GB HBM3'.*has 'NVIDIA H200'"),
                             ("compute_capability", "8.9", "compute capability '9.0'.*has '8.9'"),
                             ("tensorrt", "10.7.0", "TensorRT version '10.3.0'.*has '10.7.0'")):
        with pytest.raises(ExportedModelError, match=said + ".*rebuild it on this machine"):
            check_engine_target(meta, path, {**H100, key: other})
    with pytest.raises(ExportedModelError, match="does not say which GPU"):
        check_engine_target(_engine_meta(), path, H100)
    (tmp_path / "bare.engine").write_bytes(b"ftrt" + b"\x00" * 64)
    with pytest.raises(ExportedModelError, match="not a sapiens2 TensorRT engine"):
        read_export_metadata(tmp_path / "bare.engine")
    (tmp_path / "cut.engine").write_bytes(path.read_bytes()[:len(MAGIC) + 20])
    with pytest.raises(ExportedModelError, match="truncated"):
        read_export_metadata(tmp_path / "cut.engine")


def test_tensorrt_without_tensorrt_names_the_extra(tmp_path, monkeypatch, capsys):
    from sapiens2.cli.main import main
    from sapiens2.export.tensorrt import write_engine

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed (it is not, here; and stays so on CI)
    engine = tmp_path / "seg.engine"
    write_engine(engine, b"plan", _engine_meta(**H100))
    with pytest.raises(MissingExtraError, match=r"sapiens2\[tensorrt\]"):
        load_exported(engine, task="seg")
    ckpt = _checkpoint(tmp_path, "seg", 0)
    image = tmp_path / "img.png"
    from sapiens2.io import write_png

    write_png(image, np.zeros((64, 48, 3), np.uint8))
    assert main(["predict", "--backend", "tensorrt", "--dtype", "bfloat16", "--checkpoint", f"seg={engine}",
                 "--device", "cpu", str(image), "-o", str(tmp_path / "o")]) == 1
    assert "sapiens2[tensorrt]" in capsys.readouterr().err
    from sapiens2.profiling.backends import TENSORRT

    assert "sapiens2[tensorrt]" in TENSORRT.refusal("cuda", "bfloat16")
    assert TENSORRT.refusal("cpu", "float32") is not None
    del ckpt


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs a CUDA GPU")
def test_tensorrt_engine_matches_torch_on_the_gpu(tmp_path):
    """Where TensorRT and a GPU exist: a float32 engine of the seg model equals torch within 1e-3 relative, a
    bfloat16 one within 5e-2; the second load is a cache hit."""
    pytest.importorskip("tensorrt")
    from sapiens2.inference.backends import load_backend_model

    torch.manual_seed(0)
    model = build_model("seg", TWO_BLOCKS, img_size=SMALL).eval()
    x = torch.randn(3, 3, *SMALL)
    with torch.no_grad():
        ref = model(x)
    for dtype, bound in (("float32", 1e-3), ("bfloat16", 5e-2)):
        engine = load_backend_model("tensorrt", "seg", model, input_size=SMALL, device=torch.device("cuda"),
                                    export_cache=tmp_path, dtype=dtype)
        assert engine.metadata.engine["gpu"] == torch.cuda.get_device_name()
        assert rel_err(engine(x.cuda()).cpu(), ref) <= bound
