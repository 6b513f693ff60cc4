"""``sapiens2 features``: files written, values equal a direct backbone call, bad inputs skipped, resume."""
import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sapiens2
from sapiens2.cli.main import main
from sapiens2.tasks.preprocess import stretch_resize, to_model_batch


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(d / "a.png"), rng.integers(0, 255, (90, 70, 3), dtype=np.uint8))
    cv2.imwrite(str(d / "sub" / "b.jpg"), rng.integers(0, 255, (50, 80, 3), dtype=np.uint8))
    return d


def test_checkpoint_features_equal_direct_backbone_call(tmp_path, photos):
    torch.manual_seed(0)
    bb = sapiens2.build_backbone("tiny", img_size=(64, 48)).eval()
    ckpt = tmp_path / "bb.safetensors"
    save_file(bb.state_dict(), str(ckpt))
    out = tmp_path / "out"
    rc = main(["features", str(photos), "--checkpoint", str(ckpt), "--input-size", "64x48",
               "--save-dtype", "float32", "-o", str(out)])
    assert rc == 0
    feats = np.load(out / "a.features.npy")
    assert feats.shape == (64, 4, 3) and feats.dtype == np.float32
    rgb = cv2.cvtColor(cv2.imread(str(photos / "a.png")), cv2.COLOR_BGR2RGB)
    with torch.inference_mode():
        ref = bb(to_model_batch([stretch_resize(rgb, (64, 48), cv2.INTER_CUBIC)]))[0].numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-5)
    pic = cv2.imread(str(out / "sub" / "b.features.png"))
    assert pic.shape == (50, 160, 3)  # the photo beside its PCA picture


def test_rerun_skips_and_overwrite_redoes(tmp_path, photos):
    out = tmp_path / "out"
    args = ["features", str(photos), "--random-weights", "sapiens2_tiny", "--input-size", "64x48", "-o", str(out)]
    assert main(args) == 0
    target = out / "a.features.npy"
    before = target.stat().st_mtime_ns
    assert main(args) == 0
    assert target.stat().st_mtime_ns == before
    assert main(args + ["--overwrite"]) == 0
    assert target.stat().st_mtime_ns != before


def test_bad_files_are_skipped_and_reported(tmp_path, photos, caplog):
    (photos / "broken.jpg").write_text("not an image")
    out = tmp_path / "out"
    rc = main(["features", str(photos), "--random-weights", "sapiens2_tiny", "--input-size", "64x48", "-o", str(out)])
    assert rc == 0
    assert (out / "a.features.npy").exists() and not (out / "broken.features.npy").exists()
    assert "broken.jpg" in caplog.text
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"")
    assert main(["features", str(only_bad), "--random-weights", "sapiens2_tiny", "--input-size", "64x48",
                 "-o", str(out)]) == 1


def test_input_size_not_multiple_of_16_is_a_usage_error(tmp_path, photos, capsys):
    # status 2 under the features usage line, before any model is built
    with pytest.raises(SystemExit) as exit_info:
        main(["features", str(photos), "--random-weights", "sapiens2_tiny", "--input-size", "60x48",
              "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage: sapiens2 features" in err and "multiples of 16" in err
    assert not (tmp_path / "o").exists()


def test_rerun_redoes_partial_outputs_and_other_settings(tmp_path, photos):
    out = tmp_path / "out"
    args = ["features", str(photos), "--random-weights", "sapiens2_tiny", "--input-size", "64x48", "-o", str(out)]
    assert main(args) == 0
    npy, png = out / "a.features.npy", out / "a.features.png"
    png.unlink()  # as if the run had died between the two files
    first = npy.stat().st_mtime_ns
    assert main(args) == 0
    assert png.exists() and npy.stat().st_mtime_ns != first  # redone, not trusted
    kept = npy.stat().st_mtime_ns
    assert main(args[:-2] + ["--save-dtype", "float32", "-o", str(out)]) == 0  # other settings: redone
    assert npy.stat().st_mtime_ns != kept and np.load(npy).dtype == np.float32


def test_an_output_folder_inside_the_input_folder_is_not_read_back(tmp_path, photos):
    out = photos / "features_out"
    args = ["features", str(photos), "--random-weights", "sapiens2_tiny", "--input-size", "64x48", "-o", str(out)]
    assert main(args) == 0
    assert main(args) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.features.npy"))
    assert written == ["a.features.npy", "sub/b.features.npy"]
