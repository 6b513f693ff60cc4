"""Predictor: multi-task runs (seg once, background blanking), streaming batched predict_many, inputs, errors."""
import cv2
import numpy as np
import pytest
import torch

from sapiens2.errors import InputSizeError, ModelNotAvailableError, Sapiens2Error
from sapiens2.io import load_image
from sapiens2.models.task_model import build_model
from sapiens2.inference.predictor import PredictInput, Predictor, resolve_device

INPUT_HW = (128, 96)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class CallLog:
    def __init__(self, model):
        self.sizes = []
        model.register_forward_hook(lambda mod, args, out: self.sizes.append(args[0].shape[0]))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(4)
    return {t: build_model(t, "sapiens2_tiny", img_size=INPUT_HW).eval() for t in ("seg", "normal", "pose")}


def test_multi_task_runs_seg_once_and_blanks_the_normals_background(models):
    seg_log, normal_log = CallLog(models["seg"]), CallLog(models["normal"])
    p = Predictor(["normal", "seg"], model={"seg": models["seg"], "normal": models["normal"]}, device="cpu",
                  input_size=INPUT_HW)
    assert p.tasks == ("seg", "normal")
    pred = p.predict(_image(150, 250))
    assert seg_log.sizes == [1] and normal_log.sizes == [1]
    fg = pred.seg.foreground
    assert 0 < fg.sum() < fg.size  # the random model gives both foreground and background here
    np.testing.assert_array_equal(pred.normal.mask, fg)
    assert not pred.normal.normals[~fg].any()
    np.testing.assert_allclose(np.linalg.norm(pred.normal.normals[fg], axis=-1), 1.0, atol=1e-5)
    assert set(pred.timings) >= {"pre", "forward", "post"} and all(v >= 0 for v in pred.timings.values())
    # without blanking the background keeps its normals
    plain = Predictor(["normal", "seg"], model=models, device="cpu", input_size=INPUT_HW, mask_with_seg=False)
    assert plain.predict(_image(150, 250)).normal.mask is None


def test_mask_with_seg_runs_seg_without_returning_it(models):
    seg_log = CallLog(models["seg"])
    p = Predictor("normal", model=models, device="cpu", input_size=INPUT_HW, mask_with_seg=True)
    pred = p.predict(_image(90, 70))
    assert seg_log.sizes == [1] and pred.seg is None and pred.normal.mask is not None


def test_predict_many_batches_streams_and_keeps_order(models):
    seg_log = CallLog(models["seg"])
    p = Predictor("seg", model=models["seg"], device="cpu", input_size=INPUT_HW, batch_size=2)
    sizes = [(50, 70), (80, 40), (64, 64)]
    pulled = []

    def images():
        for i, hw in enumerate(sizes):
            pulled.append(i)
            yield PredictInput(_image(*hw, seed=i), frame_index=i)

    stream = p.predict_many(images())
    first = next(stream)
    assert pulled == [0, 1]  # only the first batch has been read
    rest = list(stream)
    preds = [first] + rest
    assert seg_log.sizes == [2, 1]
    assert [pr.frame_index for pr in preds] == [0, 1, 2]
    assert [pr.image_size for pr in preds] == sizes
    assert [pr.seg.mask.shape for pr in preds] == sizes
    # batched results equal one-by-one results
    single = p.predict(_image(*sizes[1], seed=1))
    np.testing.assert_array_equal(single.seg.mask, preds[1].seg.mask)


def test_gray_rgba_path_and_loaded_image_inputs(models, tmp_path):
    p = Predictor("seg", model=models["seg"], device="cpu", input_size=INPUT_HW)
    rgb = _image(60, 80)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert p.predict(gray).seg.mask.shape == (60, 80)
    rgba = np.dstack([rgb, np.full((60, 80), 255, np.uint8)])
    np.testing.assert_array_equal(p.predict(rgba).seg.mask, p.predict(rgb).seg.mask)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    from_path = p.predict(path)
    assert from_path.source == path
    np.testing.assert_array_equal(from_path.seg.mask, p.predict(rgb).seg.mask)
    np.testing.assert_array_equal(p.predict(load_image(path)).seg.mask, from_path.seg.mask)


def test_bfloat16_on_cpu_runs_under_autocast(models):
    p = Predictor("seg", model=models["seg"], device="cpu", dtype="bfloat16", input_size=INPUT_HW)
    assert p.amp_dtype == torch.bfloat16
    pred = p.predict(_image(40, 30))
    assert pred.seg.mask.shape == (40, 30) and pred.seg.mask.dtype == np.uint8
    assert Predictor("seg", model=models["seg"], device="cpu", dtype="float16").amp_dtype is None


def test_clear_errors_for_unpublished_models_and_bad_settings(models):
    with pytest.raises(ModelNotAvailableError, match="albedo has no public checkpoint"):
        Predictor("albedo", model="0.4b", device="cpu")
    with pytest.raises(ModelNotAvailableError, match="sapiens2-matting-1b"):
        Predictor(["seg", "matting"], model="0.4b", device="cpu")
    with pytest.raises(Sapiens2Error, match="unknown task"):
        Predictor("depthmap", model=models["seg"])
    with pytest.raises(Sapiens2Error, match="no model given for seg"):
        Predictor(["normal", "seg"], model={"normal": models["normal"]}, device="cpu")
    with pytest.raises(Sapiens2Error, match="is a seg model"):
        Predictor("normal", model=models["seg"], device="cpu")
    with pytest.raises(InputSizeError):
        Predictor("seg", model=models["seg"], device="cpu", input_size=(100, 90))
    pointmap = build_model("pointmap", "sapiens2_tiny", img_size=(256, 192))
    with pytest.raises(InputSizeError, match="pointmap"):
        Predictor("pointmap", model=pointmap, device="cpu", input_size=INPUT_HW)


def test_device_auto_resolves_to_an_available_device():
    dev = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert dev.type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_predict_many_yields_failed_items_and_keeps_the_rest(models, tmp_path):
    """A missing file or bad boxes in a batch used to raise and lose the batch's good results."""
    good = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(good):
        cv2.imwrite(str(path), _image(40, 30, seed=i))
    p = Predictor("pose", model=models["pose"], device="cpu", input_size=INPUT_HW, batch_size=4, detector="none")
    preds = list(p.predict_many([*map(str, good), str(tmp_path / "missing.png"),
                                 PredictInput(_image(40, 30), boxes=[[1, 2, 3]])]))
    assert [pr.ok for pr in preds] == [True, True, False, False]
    assert [pr.pose.num_people for pr in preds[:2]] == [1, 1] and preds[0].source == good[0]
    missing = preds[2]
    assert missing.pose is None and missing.source == tmp_path / "missing.png"
    assert isinstance(missing.error, Sapiens2Error) and "missing.png" in str(missing.error)
    assert isinstance(preds[3].error, Sapiens2Error)
    one = p.predict(str(good[0]))  # the same numbers as alone
    np.testing.assert_array_equal(one.pose.keypoints, preds[0].pose.keypoints)
    with pytest.raises(Sapiens2Error):  # a single predict still raises
        p.predict(str(tmp_path / "missing.png"))


def test_overlapped_stream_gives_the_same_predictions_and_isolates_post_failures(models, monkeypatch):
    """``overlap=True`` post-processes a batch while the model runs on the next: same numbers, same order; a
    failure there fails only its image (it and the rest of its batch are redone image by image; the images
    before it were handed out already, with their batch's numbers)."""
    import sapiens2.inference.predictor as predictor_module

    p = Predictor(["seg", "pose", "normal"], model=models, device="cpu", input_size=INPUT_HW, batch_size=2,
                  detector="none")
    sizes = [(50, 70), (80, 40), (64, 64), (40, 30), (70, 50), (30, 60)]
    inputs = [PredictInput(_image(*hw, seed=i), frame_index=i) for i, hw in enumerate(sizes)]
    plain = list(p.predict_many(inputs))
    real = predictor_module.instance_masks

    def broken(mask, boxes):  # the seg results of the fourth image (second batch, beside the third's forward)
        if mask.shape == sizes[3]:
            raise RuntimeError("post-processing failed")
        return real(mask, boxes)

    monkeypatch.setattr(predictor_module, "instance_masks", broken)
    overlapped = list(p.predict_many(inputs, overlap=True))
    assert [pr.frame_index for pr in overlapped] == [0, 1, 2, 3, 4, 5]
    assert [pr.ok for pr in overlapped] == [True, True, True, False, True, True]
    assert "post-processing failed" in str(overlapped[3].error)
    for a, b in zip(plain[:3] + plain[4:], overlapped[:3] + overlapped[4:]):
        np.testing.assert_array_equal(a.seg.mask, b.seg.mask)
        np.testing.assert_array_equal(a.seg.instance_masks, b.seg.instance_masks)
        np.testing.assert_array_equal(a.pose.keypoints, b.pose.keypoints)
        np.testing.assert_array_equal(a.pose.scores, b.pose.scores)
        np.testing.assert_array_equal(a.normal.normals, b.normal.normals)
        assert b.timings["post"] > 0 and set(b.timings) >= {"pre", "forward", "post"}


def test_overlapped_stream_hands_out_each_image_before_its_batch_mates_are_post_processed(models, monkeypatch):
    """With ``overlap=True`` a prediction is yielded as soon as its own post-processing is done, so its consumer
    (the job's writers) works beside its batch-mates' post-processing, the last batch's included."""
    import sapiens2.inference.predictor as predictor_module

    p = Predictor(["seg", "pose"], model=models, device="cpu", input_size=INPUT_HW, batch_size=2, detector="none")
    sizes = [(50, 70), (80, 40), (64, 64), (40, 30)]
    events = []
    real = predictor_module.instance_masks

    def logged(mask, boxes):  # per image, in its seg result
        events.append(("post", sizes.index(mask.shape)))
        return real(mask, boxes)

    monkeypatch.setattr(predictor_module, "instance_masks", logged)
    inputs = [PredictInput(_image(*hw, seed=i), frame_index=i) for i, hw in enumerate(sizes)]
    for prediction in p.predict_many(inputs, overlap=True):
        assert prediction.ok
        events.append(("out", prediction.frame_index))
    assert events == [(kind, k) for k in range(4) for kind in ("post", "out")]
