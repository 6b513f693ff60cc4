"""Seg pipeline: stretch -> logits -> bilinear upsampling to the original size -> argmax (and softmax on request)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sapiens2.models.task_model import build_model
from sapiens2.inference.predictor import Predictor
from sapiens2.tasks.preprocess import to_model_batch
from sapiens2.tasks.seg import coarse_argmax, instance_masks, seg_input, upsampled_argmax, upsampled_softmax

INPUT_HW = (128, 96)


@pytest.fixture(scope="module")
def seg_model():
    torch.manual_seed(1)
    return build_model("seg", "sapiens2_tiny", img_size=INPUT_HW).eval()


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_seg_end_to_end_matches_torch_reference(seg_model):
    img = _image(150, 250)  # 3:5, not the model's 4:3
    pred = Predictor("seg", model=seg_model, device="cpu", input_size=INPUT_HW, return_probabilities=True).predict(img)
    seg = pred.seg
    assert pred.image_size == (150, 250)
    assert seg.mask.shape == (150, 250) and seg.mask.dtype == np.uint8
    with torch.inference_mode():
        logits = seg_model(to_model_batch(seg_input(img, INPUT_HW)[None]))
    ref = F.interpolate(logits, size=(150, 250), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(seg.mask, ref.argmax(1)[0].numpy())
    assert len(np.unique(seg.mask)) > 1  # a random model still predicts several classes
    probs = seg.probabilities
    assert probs.shape == (29, 150, 250) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, ref.softmax(1)[0].numpy(), atol=1e-6)
    assert seg.instance_masks is None  # no person boxes known


def test_coarse_argmax_is_the_argmax_at_the_shrunk_size_enlarged(seg_model):
    logits = torch.randn(29, 16, 12, generator=torch.Generator().manual_seed(3))
    # small enough: the official ids exactly
    np.testing.assert_array_equal(coarse_argmax(logits, (40, 30), 40 * 30), upsampled_argmax(logits, (40, 30)).numpy())
    # a 160x240 frame at 40x60's pixel count: ids of the 40x60 argmax, each repeated over a 4x4 block
    coarse = coarse_argmax(logits, (160, 240), 40 * 60)
    small = upsampled_argmax(logits, (40, 60)).numpy()
    assert coarse.shape == (160, 240) and coarse.dtype == np.uint8
    np.testing.assert_array_equal(coarse, np.repeat(np.repeat(small, 4, 0), 4, 1))
    official = upsampled_argmax(logits, (160, 240)).numpy()
    assert 0.5 < (coarse == official).mean() < 1.0  # a preview: the same ids but along class boundaries
    img = _image(256, 192)
    pred = Predictor("seg", model=seg_model, device="cpu", input_size=INPUT_HW, coarse_seg=True).predict(img)
    with torch.inference_mode():
        ref = seg_model(to_model_batch(seg_input(img, INPUT_HW)[None]))[0]
    np.testing.assert_array_equal(pred.seg.mask, coarse_argmax(ref, (256, 192), INPUT_HW[0] * INPUT_HW[1]))


def test_chunked_argmax_equals_full_argmax_including_ties():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(29, 12, 9, generator=g)
    logits[7] = logits[3]  # exact ties: the earlier class must win, as torch.argmax does
    logits[20, :4] = 50.0
    logits[25, :4] = 50.0
    size = (150, 250)
    full = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False).argmax(1)[0]
    for budget in (size[0] * size[1], 3 * size[0] * size[1], 10 ** 9):  # 1 class, 3 classes, all at once
        np.testing.assert_array_equal(upsampled_argmax(logits, size, budget=budget).numpy(),
                                      full.to(torch.uint8).numpy())
    assert (full[:30] == 20).all()  # rows fed only by the tied low-res rows


def test_chunked_softmax_equals_torch():
    logits = torch.randn(29, 6, 5, generator=torch.Generator().manual_seed(1)) * 4
    ref = F.interpolate(logits[None], size=(17, 11), mode="bilinear", align_corners=False).softmax(1)[0]
    np.testing.assert_allclose(upsampled_softmax(logits, (17, 11), budget=2 * 17 * 11), ref.numpy(), atol=1e-6)


def test_instance_masks_are_foreground_inside_each_box():
    mask = np.zeros((10, 12), np.uint8)
    mask[2:8, 1:11] = 5
    boxes = np.array([[0, 0, 4.2, 9], [6, 3, 11, 5]], np.float32)
    inst = instance_masks(mask, boxes)
    assert inst.shape == (2, 10, 12) and inst.dtype == bool
    want0 = np.zeros_like(inst[0])
    want0[2:8, 1:6] = True  # columns 0..ceil(4.2)=5 inclusive, rows 0..9
    np.testing.assert_array_equal(inst[0], want0)
    want1 = np.zeros_like(inst[1])
    want1[3:6, 6:11] = True
    np.testing.assert_array_equal(inst[1], want1)


def test_instance_masks_from_given_boxes_in_predictor(seg_model):
    img = _image(90, 70, seed=3)
    p = Predictor("seg", model=seg_model, device="cpu", input_size=INPUT_HW)
    pred = p.predict(img, boxes=np.array([[10, 10, 40, 60]]))
    inst = pred.seg.instance_masks
    assert inst.shape == (1, 90, 70)
    np.testing.assert_array_equal(inst[0, 10:61, 10:41], pred.seg.foreground[10:61, 10:41])
    assert not inst[0, :10].any() and not inst[0, :, 41:].any()
