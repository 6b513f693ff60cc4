"""Top-down pose pipeline: box sources, batched crops, flip test, decode to image coordinates."""
import numpy as np
import pytest
import torch
from torch import nn

from sapiens2.data.specs import keypoint_info
from sapiens2.errors import Sapiens2Error
from sapiens2.models.task_model import build_model
from sapiens2.tasks.detection import Detections, empty_detections
from sapiens2.tasks.pose import crop_boxes, decode_udp_heatmaps, decoded_to_image
from sapiens2.inference.predictor import Predictor
from sapiens2.tasks.preprocess import to_model_batch

INPUT_HW = (128, 96)
CROP_WH = (96, 128)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class CallLog:
    """Forward hook recording the batch given to a model."""

    def __init__(self, model):
        self.inputs = []
        model.register_forward_hook(lambda mod, args, out: self.inputs.append(args[0].detach().clone()))

    @property
    def sizes(self):
        return [x.shape[0] for x in self.inputs]


@pytest.fixture(scope="module")
def pose_model():
    torch.manual_seed(3)
    return build_model("pose", "sapiens2_tiny", img_size=INPUT_HW).eval()


class NobodyDetector:
    def __init__(self):
        self.calls = 0

    def detect(self, rgb):
        self.calls += 1
        return empty_detections()


class OnePeakPose(nn.Module):
    """Fake pose model: whatever the crop, channel ``k`` has one peak at heatmap pixel (row, col)."""

    task = "pose"

    def __init__(self, k, row, col):
        super().__init__()
        self.k, self.row, self.col = k, row, col

    def forward(self, x):
        maps = torch.zeros(x.shape[0], 308, x.shape[2] // 4, x.shape[3] // 4)
        maps[:, self.k, self.row, self.col] = 1.0
        return maps


def test_given_box_equals_crop_and_decode_by_hand(pose_model):
    img = _image(150, 250)
    box = np.array([[40.0, 20.0, 120.0, 140.0]], np.float32)
    pose = Predictor("pose", model=pose_model, device="cpu", input_size=INPUT_HW,
                     detector="none").predict(img, boxes=box).pose
    assert pose.box_source == "given" and pose.num_people == 1
    np.testing.assert_array_equal(pose.boxes, box)
    np.testing.assert_array_equal(pose.box_scores, [1.0])
    assert pose.keypoints.shape == (1, 308, 2) and pose.keypoints.dtype == np.float32
    assert pose.scores.shape == (1, 308) and pose.scores.dtype == np.float32
    crops = crop_boxes(img, box, CROP_WH)
    with torch.inference_mode():
        heatmaps = pose_model(to_model_batch(crops.crops)).numpy()
    kp, sc = decode_udp_heatmaps(heatmaps, CROP_WH)
    np.testing.assert_allclose(pose.keypoints, decoded_to_image(kp, crops.centers, crops.sizes, CROP_WH), atol=1e-4)
    np.testing.assert_allclose(pose.scores, sc, atol=1e-6)


def test_crops_are_batched_and_scores_from_given_boxes_kept(pose_model):
    img = _image(200, 160, seed=1)
    boxes = np.array([[0, 0, 50, 90, 0.9], [60, 20, 150, 190, 0.8], [10, 100, 70, 199, 0.7]], np.float32)
    log = CallLog(pose_model)
    small = Predictor("pose", model=pose_model, device="cpu", input_size=INPUT_HW, batch_size=2, detector="none")
    pose = small.predict(img, boxes=boxes).pose
    assert log.sizes == [2, 1]
    np.testing.assert_array_equal(pose.box_scores, boxes[:, 4])
    big = Predictor("pose", model=pose_model, device="cpu", input_size=INPUT_HW, batch_size=8, detector="none")
    together = big.predict(img, boxes=boxes).pose
    assert log.sizes[2:] == [3]
    # same people in the same order; batch composition only changes GEMM rounding (which DARK's Taylor step can
    # amplify on the random model's flat heatmaps), so compare the raw maxima and the typical keypoint
    np.testing.assert_allclose(together.scores, pose.scores, atol=1e-4)
    assert np.median(np.abs(together.keypoints - pose.keypoints)) < 1e-3


def test_flip_test_runs_mirrored_crops_and_swaps_left_right():
    swap = keypoint_info().swap
    left = int(next(k for k in range(len(swap)) if swap[k] != k))
    right = int(swap[left])
    model = OnePeakPose(left, row=10, col=5)
    log = CallLog(model)
    img = _image(120, 90, seed=2)
    box = np.array([[0, 0, 89, 119]], np.float32)
    flipping = Predictor("pose", model=model, device="cpu", input_size=INPUT_HW, flip_test=True, detector="none")
    pose = flipping.predict(img, boxes=box).pose
    assert log.sizes == [1, 1]
    torch.testing.assert_close(log.inputs[1], log.inputs[0].flip(-1))
    # averaged: the plain pass puts 1.0 on `left` at column 5; the mirrored pass's peak, flipped back, lands on
    # `right` at column W - 1 - 5; each ends with half the height.
    assert pose.scores[0, left] == pytest.approx(0.5) and pose.scores[0, right] == pytest.approx(0.5)
    hm_w = CROP_WH[0] // 4
    crops = crop_boxes(img, box, CROP_WH)
    expected = decoded_to_image(np.array([[[5, 10], [hm_w - 1 - 5, 10]]], np.float64) / [hm_w - 1, 31] * CROP_WH,
                                crops.centers, crops.sizes, CROP_WH)
    np.testing.assert_allclose(pose.keypoints[0, [left, right]], expected[0], atol=1e-3)
    others = np.setdiff1d(np.arange(308), [left, right])
    assert (pose.scores[0, others] == 0).all()
    # without the flip test the right channel stays empty
    plain = Predictor("pose", model=model, device="cpu", input_size=INPUT_HW, detector="none").predict(
        img, boxes=box).pose
    assert plain.scores[0, left] == pytest.approx(1.0) and plain.scores[0, right] == 0


def test_whole_image_fallback_when_the_detector_finds_nobody(pose_model):
    detector = NobodyDetector()
    p = Predictor("pose", model=pose_model, device="cpu", input_size=INPUT_HW, detector=detector)
    pose = p.predict(_image(150, 250)).pose
    assert detector.calls == 1
    assert pose.box_source == "whole_image"
    np.testing.assert_array_equal(pose.boxes, [[0, 0, 249, 149]])
    assert pose.keypoints.shape == (1, 308, 2)
    strict = Predictor("pose", model=pose_model, device="cpu", input_size=INPUT_HW, detector=detector,
                       fallback_whole_image=False)
    empty = strict.predict(_image(150, 250)).pose
    assert empty.num_people == 0 and empty.keypoints.shape == (0, 308, 2)
    assert empty.box_source == "detector:NobodyDetector"


def test_detector_boxes_are_used(pose_model):
    class Fixed:
        def detect(self, rgb):
            return Detections(np.array([[10, 10, 60, 100]], np.float32), np.array([0.7], np.float32))

    pose = Predictor("pose", model=pose_model, device="cpu", input_size=INPUT_HW, detector=Fixed()).predict(
        _image(120, 90)).pose
    assert pose.box_source == "detector:Fixed"
    np.testing.assert_array_equal(pose.boxes, [[10, 10, 60, 100]])
    np.testing.assert_array_equal(pose.box_scores, np.float32([0.7]))


class RectangleSeg(nn.Module):
    """Fake seg model: class 5 inside input rows 32..95 and columns 24..71, background elsewhere."""

    task = "seg"

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 29, x.shape[2], x.shape[3])
        logits[:, 0] = 1.0
        logits[:, 5, 32:96, 24:72] = 2.0
        return logits


def test_boxes_from_the_seg_foreground_with_one_seg_pass(pose_model):
    seg = RectangleSeg()
    log = CallLog(seg)
    p = Predictor(["seg", "pose"], model={"seg": seg, "pose": pose_model}, device="cpu", input_size=INPUT_HW,
                  detector="seg")
    pred = p.predict(_image(200, 150))
    assert log.sizes == [1]
    assert pred.pose.box_source == "seg" and pred.pose.num_people == 1
    # input 128x96 -> image 200x150 is x1.5625: the rectangle spans rows 50..149.5 and columns 37.5..112.5
    np.testing.assert_allclose(pred.pose.boxes[0], [37.5, 50, 112, 149], atol=1.5)
    assert pred.seg.instance_masks.shape == (1, 200, 150)
    np.testing.assert_array_equal(pred.seg.instance_masks[0], pred.seg.foreground)


def test_boxes_seg_per_call_and_clear_error_without_seg(pose_model):
    p = Predictor(["seg", "pose"], model={"seg": RectangleSeg(), "pose": pose_model}, device="cpu",
                  input_size=INPUT_HW, detector=NobodyDetector())
    pose = p.predict(_image(200, 150), boxes="seg").pose
    assert pose.box_source == "seg"
    np.testing.assert_allclose(pose.boxes[0], [37.5, 50, 112, 149], atol=1.5)
    alone = Predictor("pose", model=pose_model, device="cpu", input_size=INPUT_HW, detector=NobodyDetector())
    with pytest.raises(Sapiens2Error, match="needs the seg model"):
        alone.predict(_image(60, 40), boxes="seg")


class _Runner:
    def __init__(self, model):
        self.model = model

    def to_input(self, images):
        return to_model_batch(images, torch.device("cpu"))

    def forward(self, batch):
        with torch.inference_mode():
            return self.model(batch)


def test_top_down_decodes_only_the_requested_keypoints():
    from sapiens2.tasks.pose.pipeline import PoseImage, run_top_down

    runner = _Runner(OnePeakPose(5, 10, 7))
    items = [PoseImage(_image(150, 120), Detections(np.array([[10, 20, 90, 140]], np.float32), np.ones(1, np.float32)),
                       "given"), PoseImage(_image(60, 80, seed=2), empty_detections(), "detector:hog")]
    full = run_top_down(runner, items, input_size=CROP_WH)
    some = run_top_down(runner, items, input_size=CROP_WH, keypoints=[5, 0])
    assert some[0].keypoints.shape == (1, 2, 2) and some[0].scores.shape == (1, 2)
    np.testing.assert_array_equal(some[0].scores, full[0].scores[:, [5, 0]])
    np.testing.assert_allclose(some[0].keypoints, full[0].keypoints[:, [5, 0]], rtol=0, atol=1e-4)
    assert some[0].scores[0, 0] == 1.0 and some[0].scores[0, 1] == 0.0
    nobody = run_top_down(runner, items[1:], input_size=CROP_WH, keypoints=[5, 0], fallback_whole_image=False)
    assert nobody[0].keypoints.shape == (0, 2, 2) and nobody[0].scores.shape == (0, 2)
