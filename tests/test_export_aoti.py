"""AOTInductor packages: ``sapiens2 export --format aoti`` and ``--backend aoti`` (issue 15).

Compiling a package runs g++ on inductor's generated C++ (kernels at -O3, the wrapper, torch's headers): even for
the 2-block ``sapiens2_tiny`` arch of ``test_export`` at 64x48 that is ~27 CPU-s on a cold inductor cache (measured:
6-8 s in Python + 19-28 s in the compiler), over this suite's budget for one test. So the test that compiles runs
only with ``SAPIENS2_AOTI=1`` (one package, compiled once for the module); the errors and the target checks, which
compile nothing, always run.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import rel_err
from sapiens2.errors import ExportedModelError, ExportError, UsageError
from sapiens2.export import load_exported, read_export_metadata
from test_export import SMALL, _checkpoint, two_block_arch  # noqa: F401  (the 2-block arch fixture, re-used)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COMPILES = pytest.mark.skipif(os.environ.get("SAPIENS2_AOTI") != "1",
                              reason="compiles an AOTInductor package (~27 CPU-s of g++): set SAPIENS2_AOTI=1")


@pytest.fixture(scope="module")
def seg_package(tmp_path_factory, two_block_arch):  # noqa: F811
    """A seg checkpoint, the Predictor that compiled it into the export cache (export_model, the cache and the
    loader in one compile), and the package found there."""
    from sapiens2.inference.predictor import Predictor

    folder = tmp_path_factory.mktemp("aoti")
    ckpt = _checkpoint(folder, "seg", 1)
    predictor = Predictor("seg", ckpt, backend="aoti", input_size=SMALL, device="cpu", return_probabilities=True,
                          export_cache=folder / "cache")
    found = list((folder / "cache").glob("seg-64x48-float32-*.pt2"))
    assert len(found) == 1, found
    return ckpt, predictor, found[0]


@COMPILES
def test_package_equals_torch_and_carries_its_metadata(seg_package):
    """The compiled package gives the torch model's logits within 1e-4 relative on a batch other than the traced
    one (dynamic batch), its metadata says everything a consumer needs, and the Predictor's outputs through it equal
    the torch backend's (same pre/post-processing)."""
    from sapiens2.checkpoints import load_model
    from sapiens2.data.specs import seg_classes
    from sapiens2.inference.predictor import Predictor
    from sapiens2.runtime import PIXEL_MEAN, PIXEL_STD

    ckpt, aoti_predictor, package = seg_package
    meta = read_export_metadata(package)
    assert (meta.format, meta.task, meta.arch, meta.input_size, meta.batch, meta.dtype) == \
        ("aoti", "seg", "sapiens2_tiny2", SMALL, "dynamic", "float32")
    assert meta.mean == tuple(PIXEL_MEAN) and meta.std == tuple(PIXEL_STD)
    assert meta.names == seg_classes().names and meta.output_names == ("logits",)
    assert meta.engine["device"] == "cpu" and meta.source["file"] == str(ckpt.resolve())
    loaded = load_exported(package, task="seg", input_size=SMALL)
    assert loaded.metadata == meta

    model = load_model(ckpt, task="seg").eval()
    torch.manual_seed(2)
    x = torch.randn(3, 3, *SMALL)
    with torch.no_grad():
        expected = model(x)
    got = loaded(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert rel_err(got, expected) <= 1e-4, rel_err(got, expected)

    rgb = np.random.default_rng(5).integers(0, 256, (80, 60, 3), dtype=np.uint8)
    by_torch = Predictor("seg", ckpt, input_size=SMALL, device="cpu", return_probabilities=True).predict(rgb).seg
    by_aoti = aoti_predictor.predict(rgb).seg
    assert rel_err(torch.from_numpy(by_aoti.probabilities), torch.from_numpy(by_torch.probabilities)) <= 1e-4
    assert (by_aoti.mask == by_torch.mask).mean() >= 0.999


@COMPILES
def test_package_from_another_cpu_is_refused(seg_package, tmp_path):
    """The target check runs at load, before the compiled code: a package built with a CPU feature this CPU lacks
    is refused naming the fix."""
    _, _, package = seg_package
    meta = read_export_metadata(package)
    from sapiens2.export.aoti import check_package_target, current_target

    here = current_target("cpu")
    check_package_target(meta, package, here)  # built here: accepted
    lacking = {**here, "cpu_features": {k: False for k in here["cpu_features"]}}
    if any(meta.engine["cpu_features"].values()):
        with pytest.raises(ExportedModelError, match="this CPU lacks"):
            check_package_target(meta, package, lacking)


# ---------------------------------------------------------------------------------------------- compiles nothing
def _meta(**engine):
    from sapiens2.export.metadata import OUTPUTS, ExportMetadata

    return ExportMetadata(task="seg", arch="sapiens2_tiny2", input_size=SMALL, batch="dynamic", format="aoti",
                          dtype="float32", outputs=OUTPUTS["seg"], mean=(0.0,) * 3, std=(1.0,) * 3, engine=engine)


def test_package_target_checks_name_the_fix():
    from sapiens2.export.aoti import check_package_target, current_target

    here = current_target("cpu")
    assert here["device"] == "cpu" and set(here["cpu_features"]) >= {"avx2", "avx512", "amx_tile"}
    check_package_target(_meta(**here), "p.pt2", here)
    amx = {**here, "cpu_features": {**here["cpu_features"], "amx_tile": True, "avx512": True}}
    no_amx = {**here, "cpu_features": {**here["cpu_features"], "amx_tile": False, "avx512": False}}
    with pytest.raises(ExportedModelError, match="with avx512, amx_tile and this CPU lacks them.*--format aoti"):
        check_package_target(_meta(**amx), "p.pt2", no_amx)
    check_package_target(_meta(**no_amx), "p.pt2", amx)  # older code on a newer CPU runs
    with pytest.raises(ExportedModelError, match="machine 'aarch64'"):
        check_package_target(_meta(**{**here, "machine": "aarch64"}), "p.pt2", here)
    with pytest.raises(ExportedModelError, match="compiled for cuda, not cpu: run it with --device cuda"):
        check_package_target(_meta(**{**here, "device": "cuda"}), "p.pt2", here)
    with pytest.raises(ExportedModelError, match="does not say what it was compiled for"):
        check_package_target(_meta(), "p.pt2", here)
    with pytest.raises(ExportError, match="built for cpu or cuda here, not meta"):
        current_target("meta")


def test_missing_compiler_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    """No C++ compiler (simulated: inductor's compiler search finds none): the export stops before any work with
    an error naming what to install; nothing is written."""
    import torch._inductor.config as inductor_config

    from sapiens2.cli.main import main
    from sapiens2.profiling.backends import find_backend

    ckpt = _checkpoint(tmp_path, "seg", 0)
    out = tmp_path / "seg.pt2"
    with inductor_config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-g++"))}):
        assert main(["export", "--task", "seg", "--checkpoint", str(ckpt), "--format", "aoti", "--input-size",
                     "64x48", "-o", str(out)]) != 0
        refusal = find_backend("aoti").refusal("cpu", "float32")  # a skipped benchmark row
    err = capsys.readouterr().err
    assert "no C++ compiler was found" in err and "apt-get install g++" in err and "--format torch-export" in err
    assert not out.exists() and list(tmp_path.glob(".seg.pt2*")) == []
    assert "no C++ compiler was found" in refusal


def test_aoti_backend_usage(tmp_path, two_block_arch):  # noqa: F811
    """The backend's precisions and files: a torch-export .pt2 or an .onnx is not a package; int8 is refused."""
    from sapiens2.export import export_model
    from sapiens2.inference.backends import check_backend, check_backend_dtype, load_backend_model
    from sapiens2.models.backbone import build_backbone

    assert check_backend("AOTI", "bf16") == "aoti" and check_backend_dtype("aoti", torch.bfloat16) == "bfloat16"
    assert check_backend_dtype("onnxruntime", "bfloat16") == "float32"
    with pytest.raises(UsageError, match="runs the precision of its exported file"):
        check_backend("aoti", "int8")
    from sapiens2.profiling.backends import find_backend

    assert find_backend("aoti").refusal("cpu", "float32") is None  # g++ is here
    assert "does not run int8 on cpu" in find_backend("aoti").refusal("cpu", "int8")
    with pytest.raises(UsageError, match="--format onnx --dtype int8"):
        export_model(build_backbone(two_block_arch, img_size=SMALL), tmp_path / "x.pt2", format="aoti", dtype="int8")
    program = tmp_path / "bb.pt2"
    torch.manual_seed(0)
    export_model(build_backbone(two_block_arch, img_size=SMALL).eval(), program, format="torch-export")
    with pytest.raises(UsageError, match="torch-export export, not an AOTInductor package"):
        load_backend_model("aoti", "backbone", program, input_size=None, device=torch.device("cpu"))
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(UsageError, match="backend aoti runs .pt2 files, not m.onnx"):
        load_backend_model("aoti", "seg", onnx_file, input_size=None, device=torch.device("cpu"))
