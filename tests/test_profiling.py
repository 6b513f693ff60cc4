"""sapiens2 benchmark and the pieces it measures with: counted FLOPs, peak memory, backends (bf16 autocast, torch
int8 dynamic quantisation, torch.compile) and the Predictor's compile option."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from sapiens2.cli.main import main
from sapiens2.profiling.backends import TORCH, BackendOptions, find_backend
from sapiens2.profiling.benchmark import BenchmarkRow, fastest, recommended
from sapiens2.profiling.flops import count_flops
from sapiens2.profiling.memory import _reset_cpu_peak, measure_peak_memory


def test_flops_are_counted_not_macs():
    m, k, n = 7, 24, 10
    assert count_flops(nn.Linear(k, n), torch.randn(m, k)) == 2 * m * n * k
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.randn(2, 3, 5, 6)) == 2 * (2 * 8 * 5 * 6) * (3 * 3 * 3)
    # attention on the CPU (torch's counter misses its kernel): two products, grouped-query heads broadcast
    b, hq, hkv, s_q, s_k, d = 2, 4, 2, 9, 11, 8
    q, kv = torch.randn(b, hq, s_q, d), torch.randn(b, hkv, s_k, d)
    got = count_flops(nn.functional.scaled_dot_product_attention, q, kv, kv, enable_gqa=True)
    assert got == 2 * (2 * b * hq * s_q * s_k * d)


@pytest.mark.skipif(not _reset_cpu_peak(), reason="needs /proc/self/clear_refs (Linux)")
def test_cpu_peak_memory_sees_a_transient_allocation():
    import mmap

    size = 96 * 2**20
    with measure_peak_memory("cpu") as peak:
        # A fresh anonymous mapping, every page written: new resident memory whatever the heap already holds (a
        # tensor could reuse freed pages that earlier tests left resident in the allocator, adding nothing).
        block = mmap.mmap(-1, size)
        block.write(b"\x01" * size)
        block.close()
    assert peak.how == "VmHWM"
    assert peak.delta_bytes >= size * 0.95  # freed before the end, still in the high-water mark


def test_fastest_picks_from_measurement():
    def row(backend, dtype, rate, err):
        return BenchmarkRow("pose", backend, dtype, 1, (64, 48), "crop", items_per_s=rate, rel_error=err)

    rows = [row("torch", "float32", 10.0, 0.0), row("torch", "int8", 14.0, 0.05), row("torch", "bfloat16", 12.0, 0.01),
            BenchmarkRow("pose", "torch", "float16", 1, (64, 48), "crop", status="skipped")]
    assert fastest(rows).dtype == "int8"
    assert fastest(rows, max_rel_error=0.02).dtype == "bfloat16"
    assert fastest(rows, task="seg") is None
    assert recommended(rows).dtype == "bfloat16"  # 1.2x, within 2%
    assert recommended(rows, min_gain=1.3).dtype == "float32"  # not enough gain: float32 stays
    assert recommended(rows, max_rel_error=0.1).dtype == "int8"


@pytest.fixture(scope="module")
def tiny_pose():
    from sapiens2.models.task_model import build_model

    torch.manual_seed(0)
    return build_model("pose", "sapiens2_tiny", img_size=(64, 48)).eval()


def test_int8_dynamic_stays_within_bound(tiny_pose, one_torch_thread):
    """torch.ao dynamic int8 (still in torch 2.13, deprecated): every Linear quantised, convolutions float32.
    Bound: per-tensor int8 weights and activations carry ~0.3% relative rounding per product; 2% over the tiny
    arch's 18 blocks leaves room without hiding a broken layer (a wrong scale or swapped FFN half gives > 50%)."""
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    prepared = TORCH.prepare(tiny_pose, x, "int8", BackendOptions())
    with torch.inference_mode():
        ref = tiny_pose(x)
    out = prepared.run(x)
    linears = sum(1 for m in tiny_pose.modules() if isinstance(m, torch.nn.Linear))
    assert f"{linears} Linear layers" in prepared.note  # every one quantised, and counted
    err = ((out - ref).norm() / ref.norm()).item()
    assert 0 < err < 0.02


def test_benchmark_command_writes_json_and_markdown(tmp_path, tiny_pose, capsys, one_torch_thread):
    code = main(["benchmark", "--task", "pose", "--random-weights", "sapiens2_tiny", "--input-size", "64x48",
                 "--dtype", "float32,bfloat16,float16", "--batch-size", "1,2", "--iters", "2", "--warmup", "0",
                 "--device", "cpu", "-o", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    markdown = (tmp_path / "benchmark.md").read_text()
    assert report["device"]["kind"] == "cpu" and report["device"]["cores"] >= 1
    assert isinstance(report["device"]["features"], list) and report["device"]["torch_threads"] == 1
    rows = {(r["dtype"], r["batch_size"]): r for r in report["rows"]}
    assert set(rows) == {(d, b) for d in ("float32", "bfloat16", "float16") for b in (1, 2)}
    assert rows[("float16", 1)]["status"] == "skipped" and "float16" in rows[("float16", 1)]["reason"]
    expected_flops = count_flops(tiny_pose, torch.randn(1, 3, 64, 48))  # same arch, same seed as the command
    for dtype in ("float32", "bfloat16"):
        for batch in (1, 2):
            r = rows[(dtype, batch)]
            assert r["status"] == "ok" and r["unit"] == "crop"
            assert r["flops_per_item"] == expected_flops
            assert r["ms_per_item"] == pytest.approx(r["ms_per_batch"] / batch)
            assert r["items_per_s"] == pytest.approx(1e3 / r["ms_per_item"])
            assert r["achieved_flops"] == pytest.approx(expected_flops * r["items_per_s"])
            assert r["ceiling_flops"] == report["ceilings_flops"][dtype] > 0
            assert r["ceiling_share"] == pytest.approx(r["achieved_flops"] / r["ceiling_flops"])
            assert r["peak_memory_bytes"] is None or r["peak_memory_bytes"] > 0
    assert rows[("float32", 1)]["rel_error"] == 0.0
    assert 0 < rows[("bfloat16", 1)]["rel_error"] < 0.05  # bf16 keeps 8 bits of mantissa
    assert "| pose | 64x48 | torch | bfloat16 | 2 |" in markdown and "% of ceiling" in markdown
    assert report["fastest"]["dtype"] in ("float32", "bfloat16")
    assert "Fastest here" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--random-weights", "sapiens2_tiny", "--checkpoint", "x.safetensors"], "exclude each other"),
    (["--task", "pose", "--random-weights", "tiny", "--backend", "tensorrt-x"], "unknown backend"),
    (["--task", "pose", "--random-weights", "tiny", "--dtype", "int4"], "--dtype takes"),
    (["--task", "pose", "--random-weights", "nope"], "--random-weights"),
])
def test_benchmark_bad_options_are_usage_errors(argv, message, capsys):
    try:
        code = main(["benchmark", *argv])
    except SystemExit as exc:  # argparse's own type errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_backend_table_refuses_what_it_cannot_run():
    assert find_backend("torch").refusal("cpu", "float16") is not None
    assert find_backend("torch").refusal("cpu", "int8") is None
    assert find_backend("torch-compile").refusal("cpu", "int8") is not None


class _Heads(nn.Module):
    """A small model with a task model's shape contract: (N, 3, H, W) -> (N, C, H/4, W/4)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, stride=4, padding=1)
        self.mix = nn.Linear(5, 5)

    def forward(self, x):
        y = self.conv(x)
        return self.mix(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).sigmoid()


def test_compiled_runner_equals_eager_and_pads_to_few_shapes():
    """The Predictor's compile path (torch.compile's graph capture, padding, copies out) against eager. The
    'eager' compile backend traces with dynamo but generates no code: inductor on the tiny arch takes minutes on
    a loaded 2-core machine (measured 310 s), so its numerics are measured by the benchmark, not here."""
    from sapiens2.inference.compile import CompileSettings, padded_batch
    from sapiens2.inference.predictor import ModelRunner

    torch.manual_seed(0)
    model = _Heads().eval()
    eager = ModelRunner(model, torch.device("cpu"), None, (32, 24))
    compiled = ModelRunner(model, torch.device("cpu"), None, (32, 24), compile_settings=CompileSettings(
        backend="eager"), max_batch=8)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    for n in (3, 1, 8, 5):
        x = torch.randn(n, 3, 32, 24)
        np.testing.assert_allclose(compiled.forward(x).numpy(), eager.forward(x).numpy(), rtol=0, atol=1e-6)
    assert [padded_batch(n, 8) for n in (3, 1, 8, 5, 9)] == [4, 1, 8, 8, 9]
    assert sorted(set(seen) - {3, 1, 8, 5}) == [4] and 8 in seen  # 3 -> 4 and 5 -> 8 when compiled


def test_compile_option_errors():
    from sapiens2.errors import Sapiens2Error
    from sapiens2.inference.compile import parse_compile

    assert parse_compile(False, "cpu") is None and parse_compile("off", "cpu") is None
    assert parse_compile(True, "cpu").mode == "default"
    with pytest.raises(Sapiens2Error, match="unknown compile mode"):
        parse_compile("fastest", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_benchmark_bf16_eager_and_compiled(tiny_pose):
    from sapiens2.profiling.benchmark import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig(tasks=("pose",), input_size=(64, 48), backends=("torch", "torch-compile"),
                             dtypes=("bfloat16",), batch_sizes=(2,), iters=2, warmup=1, device="cuda",
                             options=BackendOptions(compile_mode="reduce-overhead"))
    report = run_benchmark(config, lambda task: tiny_pose.to("cuda"))
    assert report.device.kind == "cuda" and report.device.capability
    for row in report.rows:
        assert row.status == "ok", row.reason
        assert row.rel_error < 0.05 and row.peak_memory_bytes > 0 and 0 < row.ceiling_share


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_predictor_pose_decodes_on_device_like_cpu(tiny_pose):
    from sapiens2.inference.predictor import Predictor

    rgb = np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8)
    boxes = [[0, 0, 30, 40], [10, 10, 50, 70]]
    cpu = Predictor("pose", model=tiny_pose.to("cpu"), device="cpu", input_size=(64, 48), detector="none")
    gpu = Predictor("pose", model=tiny_pose, device="cuda", input_size=(64, 48), detector="none")
    a, b = cpu.predict(rgb, boxes=boxes), gpu.predict(rgb, boxes=boxes)
    np.testing.assert_allclose(b.pose.scores, a.pose.scores, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("extra, message", [(["--compile-mode", "default"], "needs --compile"),
                                            (["--compile", "--compile-mode", "fast"], "--compile-mode 'fast'")])
def test_predict_compile_options_are_checked_first(extra, message, tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    assert main(["predict", "--task", "pose", *extra, str(image), "-o", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
