import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from sapiens2.tasks.detection import (BoxFileSource, DetectionError, Detections, DetectorUnavailableError,
                                      HogPersonDetector, LETTERBOX_PRESETS, OnnxPersonDetector, PersonDetector,
                                      box_iou, boxes_from_mask, decode_rtmdet, decode_yolov8, detect_layout,
                                      hog_available, letterbox, nms, read_boxes_json, read_coco_boxes,
                                      select_detections, unletterbox_boxes, whole_image_box, write_boxes_json)


# ---- common pieces -------------------------------------------------------------------------------------------

def test_iou_and_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.8], np.float32)
    iou = box_iou(boxes, boxes)
    assert iou[0, 1] == pytest.approx(90 / 110)
    assert iou[0, 3] == pytest.approx(0.5)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 3, 2])  # box 0 overlaps the better box 1 by 0.82
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [1, 2])  # box 3 overlaps box 1 by 0.43
    np.testing.assert_array_equal(nms(boxes, scores, 0.95), [1, 0, 3, 2])
    assert box_iou(boxes[:1], boxes[:1], plus_one=True)[0, 0] == 1.0
    assert box_iou(np.array([[0, 0, 1, 1]]), np.array([[1, 1, 2, 2]]), plus_one=True)[0, 0] == pytest.approx(1 / 7)
    assert len(nms(np.zeros((0, 4)), np.zeros(0))) == 0


def test_select_detections_thresholds_sorts_and_drops_degenerate():
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [5, 5, 5, 9], [100, 0, 120, 40]], np.float32)
    found = select_detections(boxes, np.array([0.4, 0.9, 0.99, 0.2]), score_threshold=0.3)
    assert isinstance(found, Detections) and found.boxes.dtype == np.float32 and found.scores.dtype == np.float32
    np.testing.assert_array_equal(found.scores, np.float32([0.9, 0.4]))
    np.testing.assert_array_equal(found.boxes[0], [50, 50, 60, 60])


def test_whole_image_box():
    np.testing.assert_array_equal(whole_image_box(480, 640), [[0, 0, 639, 479]])
    with pytest.raises(DetectionError):
        whole_image_box(0, 10)


# ---- HOG -----------------------------------------------------------------------------------------------------

class FakeHog:
    """Stands in for cv2.HOGDescriptor: returns fixed windows in the (resized) image it is given."""

    def __init__(self, rects, weights):
        self.rects, self.weights, self.seen = rects, weights, None

    def detectMultiScale(self, gray, **kwargs):
        self.seen = gray.shape
        return np.array(self.rects), np.array(self.weights)


def test_hog_postprocessing_scales_tightens_and_suppresses():
    fake = FakeHog([[100, 50, 64, 128], [104, 50, 64, 128], [300, 100, 128, 256], [10, 10, 64, 128]],
                   [1.5, 1.0, 0.8, 0.2])
    detector = HogPersonDetector(descriptor=fake, max_side=800, score_threshold=0.5)
    assert isinstance(detector, PersonDetector)
    image = np.zeros((1200, 1600, 3), np.uint8)  # downscaled by 0.5 to 800 on the long side
    found = detector.detect(image)
    assert fake.seen == (600, 800)
    # the first window minus the 16/64 x 16/128 training margin, times 2 back to the full image
    np.testing.assert_allclose(found.boxes[0], [2 * 116, 2 * 66, 2 * 148, 2 * 162])
    np.testing.assert_allclose(found.boxes[1], [2 * 332, 2 * 132, 2 * 396, 2 * 324])
    np.testing.assert_allclose(found.scores, [1.5, 0.8])  # overlapping 1.0 window suppressed, 0.2 dropped


def test_hog_small_image_and_bad_input():
    fake = FakeHog(np.zeros((0, 4)), np.zeros(0))
    detector = HogPersonDetector(descriptor=fake, upscale_to=400)
    assert len(detector.detect(np.zeros((100, 150, 3), np.uint8)).boxes) == 0
    assert fake.seen == (267, 400)  # small images are enlarged so 128 px windows fit people
    with pytest.raises(DetectionError, match="uint8"):
        detector.detect(np.zeros((100, 150, 3), np.float32))
    with pytest.raises(DetectionError, match="RGB"):
        detector.detect(np.zeros((100, 150), np.uint8))


def stick_figure(img, x, y, s):
    """A dark standing figure, head top at (x, y), about 180 * s px tall."""
    import cv2

    c, p = (40, 40, 40), lambda v: int(v * s)
    cv2.circle(img, (x, y + p(12)), p(11), c, -1)
    cv2.rectangle(img, (x - p(16), y + p(26)), (x + p(16), y + p(95)), c, -1)
    for side in (-1, 1):
        cv2.line(img, (x + side * p(16), y + p(30)), (x + side * p(26), y + p(90)), c, p(8))
        cv2.line(img, (x + side * p(8), y + p(95)), (x + side * p(12), y + p(180)), c, p(11))


@pytest.mark.skipif(not hog_available(), reason="this OpenCV build has no HOGDescriptor (OpenCV 5)")
def test_real_hog_finds_standing_figures_and_nobody_in_a_blank_image():
    import cv2

    found = HogPersonDetector().detect(np.full((300, 200, 3), 128, np.uint8))
    assert found.boxes.shape == (0, 4) and found.scores.shape == (0,)
    img = np.full((480, 640, 3), 200, np.uint8)
    stick_figure(img, 200, 100, 1.5)  # spans about y 100..370, x 170..230
    stick_figure(img, 470, 150, 1.0)  # spans about y 150..330
    found = HogPersonDetector().detect(cv2.GaussianBlur(img, (5, 5), 0))
    assert len(found.boxes) == 2
    order = np.argsort(found.boxes[:, 0])
    centres = (found.boxes[order, :2] + found.boxes[order, 2:]) / 2
    np.testing.assert_allclose(centres, [[200, 235], [470, 240]], atol=15)
    heights = found.boxes[order, 3] - found.boxes[order, 1]
    np.testing.assert_allclose(heights, [270, 180], rtol=0.15)  # tightened boxes hug the figures


@pytest.mark.skipif(hog_available(), reason="HOG is available in this OpenCV build")
def test_missing_hog_gives_clear_error():
    with pytest.raises(DetectorUnavailableError, match="opencv-python-headless<5"):
        HogPersonDetector()


# ---- ONNX ----------------------------------------------------------------------------------------------------

def yolo_output(n=100, classes=80):
    out = np.zeros((1, 4 + classes, n), np.float32)
    out[0, :4, 0] = [100, 200, 40, 80]  # person, cx cy w h
    out[0, 4 + 0, 0] = 0.9
    out[0, :4, 1] = [300, 300, 50, 50]  # a car
    out[0, 4 + 2, 1] = 0.95
    out[0, 4 + 0, 1] = 0.5
    out[0, :4, 2] = [102, 201, 40, 80]  # duplicate person
    out[0, 4 + 0, 2] = 0.7
    return out


def test_decode_yolov8_layouts():
    boxes, scores = decode_yolov8(yolo_output())
    np.testing.assert_allclose(boxes[:2], [[80, 160, 120, 240], [82, 161, 122, 241]])
    np.testing.assert_allclose(scores[:2], [0.9, 0.7])
    assert len(boxes) == 100 - 1  # every anchor whose best class is person (the car is not)
    boxes_t, scores_t = decode_yolov8(yolo_output().transpose(0, 2, 1))
    np.testing.assert_array_equal(boxes_t, boxes)
    with pytest.raises(DetectionError, match="class 3"):
        decode_yolov8(np.zeros((1, 5, 100)), person_class=3)


def test_decode_rtmdet():
    dets = np.array([[[10, 20, 50, 120, 0.9], [0, 0, 5, 5, 0.99], [12, 22, 48, 118, 0.6]]], np.float32)
    labels = np.array([[0, 2, 0]])
    boxes, scores = decode_rtmdet(dets, labels)
    np.testing.assert_array_equal(scores, np.float32([0.9, 0.6]))
    np.testing.assert_array_equal(boxes[0], [10, 20, 50, 120])
    with pytest.raises(DetectionError, match="dets"):
        decode_rtmdet(np.zeros((1, 3, 4)), np.zeros((1, 3)))


def test_detect_layout():
    assert detect_layout([[1, 84, 8400]]) == "yolov8"
    assert detect_layout([["batch", 100, 5], ["batch", 100]]) == "rtmdet"
    with pytest.raises(DetectionError, match="unsupported detector outputs"):
        detect_layout([[1, 100, 4], [1, 100], [1, 100]])


def test_letterbox_round_trip():
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, :, 0] = 255  # red
    tensor, scale, offset = letterbox(image, (640, 640), LETTERBOX_PRESETS["yolov8"])
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert offset == (0, 160) and scale == (640 / 600, 320 / 300)
    assert tensor[0, 0, 320, 320] == 1.0 and tensor[0, 0, 10, 320] == pytest.approx(114 / 255)
    bgr, _, off = letterbox(image, (640, 640), LETTERBOX_PRESETS["rtmdet"])
    assert off == (0, 0) and bgr[0, 2, 10, 10] == pytest.approx((255 - 123.675) / 58.395)  # red is last in BGR
    image_boxes = np.array([[60.0, 30.0, 120.0, 290.0]])
    in_net = image_boxes * [scale[0], scale[1], scale[0], scale[1]] + [offset[0], offset[1], offset[0], offset[1]]
    np.testing.assert_allclose(unletterbox_boxes(in_net, scale, offset, (300, 600)), image_boxes, atol=1e-4)


class FakeSession:
    def __init__(self, outputs, input_shape=(1, 3, 640, 640)):
        self.outputs, self.input_shape, self.fed = outputs, input_shape, None

    def get_inputs(self):
        return [SimpleNamespace(name="images", shape=list(self.input_shape))]

    def get_outputs(self):
        return [SimpleNamespace(shape=list(o.shape)) for o in self.outputs]

    def run(self, names, feed):
        self.fed = feed
        return self.outputs


def test_onnx_detector_end_to_end_with_fake_session():
    session = FakeSession([yolo_output()])
    detector = OnnxPersonDetector(session=session, score_threshold=0.3, nms_iou=0.3)
    assert detector.layout == "yolov8" and detector.input_size == (640, 640)
    found = detector.detect(np.zeros((320, 640, 3), np.uint8))  # scale 1, padded 160 px top and bottom
    assert session.fed["images"].shape == (1, 3, 640, 640)
    np.testing.assert_allclose(found.boxes, [[80, 0, 120, 80]])  # y 160..240 in the net -> 0..80, one after NMS
    np.testing.assert_allclose(found.scores, [0.9])

    dets = np.array([[[10, 20, 50, 120, 0.9], [12, 22, 48, 118, 0.6], [200, 200, 300, 400, 0.2]]], np.float32)
    rtm = OnnxPersonDetector(session=FakeSession([dets, np.zeros((1, 3), np.int64)]))
    assert rtm.layout == "rtmdet" and rtm.preprocess.channel_order == "bgr"
    found = rtm.detect(np.zeros((1280, 1280, 3), np.uint8))  # scale 0.5, top-left aligned
    np.testing.assert_allclose(found.boxes, [[20, 40, 100, 240]])


def test_onnx_detector_without_onnxruntime_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" fails, installed or not
    with pytest.raises(DetectorUnavailableError, match="pip install onnxruntime"):
        OnnxPersonDetector(tmp_path / "det.onnx")


# ---- boxes files ---------------------------------------------------------------------------------------------

def test_coco_boxes_file(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a/one.jpg"}, {"id": 2, "file_name": "two.jpg"}],
        "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "person"}],
        "annotations": [
            {"image_id": 1, "bbox": [10, 20, 30, 40], "category_id": 7, "score": 0.5},
            {"image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 7, "score": 0.9},
            {"image_id": 1, "bbox": [0, 0, 100, 100], "category_id": 3},
            {"image_id": 1, "bbox": [0, 0, 100, 100], "category_id": 7, "iscrowd": 1},
        ],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(coco))
    found = read_coco_boxes(path)
    assert set(found) == {"a/one.jpg", "two.jpg"}
    np.testing.assert_array_equal(found["a/one.jpg"].boxes, [[0, 0, 5, 5], [10, 20, 40, 60]])
    np.testing.assert_array_equal(found["a/one.jpg"].scores, np.float32([0.9, 0.5]))
    assert found["two.jpg"].boxes.shape == (0, 4)
    source = BoxFileSource(path)
    assert len(source.boxes_for("/data/images/one.jpg").boxes) == 2  # matched by name
    assert source.boxes_for("three.jpg") is None

    results = [{"image_id": 5, "bbox": [1, 2, 3, 4], "score": 0.7, "category_id": 1}]
    path.write_text(json.dumps(results))
    np.testing.assert_array_equal(read_coco_boxes(path)[5].boxes, [[1, 2, 4, 6]])


def test_per_image_boxes_files(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps({"boxes": [[1, 2, 3, 4], [5, 6, 7, 8, 0.25]]}))
    found = read_boxes_json(tmp_path / "one.json")
    np.testing.assert_array_equal(found.boxes, [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(found.scores, np.float32([1.0, 0.25]))
    source = BoxFileSource(tmp_path)
    assert len(source.boxes_for("/somewhere/one.png").boxes) == 2
    assert source.boxes_for("two.png") is None
    write_boxes_json(tmp_path / "copy.json", found)
    again = read_boxes_json(tmp_path / "copy.json")
    np.testing.assert_array_equal(again.boxes, found.boxes)


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"box": []}', "'boxes' list"),
    ('{"boxes": [[1, 2, 3]]}', "4 or 5 numbers"),
    ('{"boxes": [[1, 2, "x", 4]]}', "numbers only"),
    ('{"boxes": [[5, 2, 1, 4]]}', "x2 >= x1"),
])
def test_bad_per_image_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DetectionError, match=message):
        read_boxes_json(path)


def test_bad_coco_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}],
                                "images": [{"id": 2, "file_name": "x.jpg"}]}))
    with pytest.raises(DetectionError, match="unknown image_id"):
        read_coco_boxes(path)
    path.write_text(json.dumps({"annotations": [], "categories": [{"id": 1, "name": "car"}]}))
    with pytest.raises(DetectionError, match="no category named 'person'"):
        read_coco_boxes(path)
    path.write_text(json.dumps({"foo": 1}))
    with pytest.raises(DetectionError, match="not a COCO file"):
        read_coco_boxes(path)
    with pytest.raises(DetectionError, match="not found"):
        read_coco_boxes(tmp_path / "missing.json")
    with pytest.raises(DetectionError, match="not found"):
        BoxFileSource(tmp_path / "missing")


# ---- boxes from a mask ---------------------------------------------------------------------------------------

def test_boxes_from_mask():
    mask = np.zeros((100, 120), np.uint8)
    mask[10:60, 20:40] = 3  # a person (any class > 0 is foreground)
    mask[62:90, 22:38] = 5  # legs, split from the body by a 2 px gap
    mask[5:80, 80:110] = 1  # another person
    mask[95, 5] = 1  # a speck
    found = boxes_from_mask(mask, min_area_fraction=0.001)
    np.testing.assert_array_equal(found.boxes, [[80, 5, 109, 79], [20, 10, 39, 59], [22, 62, 37, 89]])
    np.testing.assert_array_equal(found.scores, np.ones(3, np.float32))
    joined = boxes_from_mask(mask, dilate=2)
    np.testing.assert_array_equal(joined.boxes, [[80, 5, 109, 79], [20, 10, 39, 89]])
    merged = boxes_from_mask(mask, merge=True)
    np.testing.assert_array_equal(merged.boxes, [[20, 5, 109, 89]])
    assert boxes_from_mask(np.zeros((10, 10))).boxes.shape == (0, 4)
    with pytest.raises(DetectionError, match=r"\(H, W\)"):
        boxes_from_mask(np.zeros((2, 10, 10)))
