"""Pose's default person detector, RT-DETR through transformers: the adapter against transformers' own model and
post-processing (random weights: no hub here), loading by hub name from the Hugging Face cache, the detector named
in every output, and offline without the weights: one clear error, never another detector in its place."""
from __future__ import annotations

import ast
import json
import shutil
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import write_tiny_checkpoints
from sapiens2.cli.main import main
from sapiens2.errors import ModelNotAvailableError
from sapiens2.tasks.detection import (DetectionError, DetectorUnavailableError, DetrPreprocess, person_label_id,
                                      rtdetr_pixels)

transformers = pytest.importorskip("transformers", reason="RT-DETR runs through transformers (the detect extra)")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = "PekingU/rtdetr_r50vd"
INPUT_HW = (96, 128)  # the tiny detector's input size (its preprocessor_config.json)
ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


def _tiny_rtdetr(folder: Path) -> Path:
    """A random-weight RT-DETR with COCO-style labels (0 = person) saved as transformers does, plus the processor
    config of the published checkpoints (stretch, rescale 1/255, no normalisation) at a small size. The default
    init gives every query the same near-zero logits; a larger init spreads scores and boxes so that the
    threshold and the top-k rule both decide something."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrResNetConfig

    labels = ["person", "bicycle", "car", "dog"]
    backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                  layer_type="basic", out_indices=[2, 3, 4])
    config = RTDetrConfig(backbone_config=backbone, encoder_in_channels=[16, 32, 64], encoder_hidden_dim=16,
                          encoder_ffn_dim=32, d_model=16, decoder_in_channels=[16, 16, 16], decoder_ffn_dim=32,
                          decoder_layers=1, num_queries=30, encoder_attention_heads=2, decoder_attention_heads=2,
                          num_denoising=0, initializer_range=0.3, id2label=dict(enumerate(labels)),
                          label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    model = RTDetrForObjectDetection(config).eval()
    with torch.no_grad():
        model.model.decoder.class_embed[0].bias.zero_()
        model.model.decoder.bbox_embed[0].layers[2].weight.normal_(0, 0.3)
    model.save_pretrained(str(folder))
    processor = {"image_processor_type": "RTDetrImageProcessor", "do_resize": True, "do_rescale": True,
                 "do_normalize": False, "do_pad": False, "resample": 2, "rescale_factor": 1 / 255,
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                 "size": {"height": INPUT_HW[0], "width": INPUT_HW[1]}}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    return _tiny_rtdetr(tmp_path_factory.mktemp("rtdetr"))


@pytest.fixture(scope="module")
def pose_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoints(tmp_path_factory.mktemp("pose"), ["pose"], (64, 48))["pose"]


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)


def transformers_post_process():
    """transformers' own ``RTDetrImageProcessor.post_process_object_detection``, its source run unchanged. The
    processor classes cannot be imported here: one needs torchvision, the other PIL, and neither is installed (nor
    needed by this project); the method itself uses torch alone."""
    import transformers.models.rt_detr as package
    from transformers.image_transforms import center_to_corners_format

    tree = ast.parse((Path(package.__file__).parent / "image_processing_rt_detr.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RTDetrImageProcessor")
    method = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "post_process_object_detection")
    method.decorator_list = []  # @requires(backends=("torch",)): torch is here
    namespace = {"torch": torch, "center_to_corners_format": center_to_corners_format,
                 "TensorType": transformers.utils.TensorType}
    exec(compile(ast.Module([method], type_ignores=[]), "image_processing_rt_detr.py", "exec"), namespace)
    return namespace["post_process_object_detection"]


def test_rtdetr_adapter_gives_transformers_boxes(detector_dir):
    """Our loader + NumPy decoding = transformers' model + post_process_object_detection (person class, clipped to
    the image), for an image at the network size and one that is stretched to it."""
    from transformers import AutoModelForObjectDetection

    from sapiens2.inference.detectors import load_rtdetr

    ours = load_rtdetr(detector_dir, nms_iou=None)
    assert ours.name == f"rtdetr:{detector_dir}" and ours.person_class == 0
    assert ours.preprocess == DetrPreprocess((96, 128), 1 / 255, None, None)
    reference = AutoModelForObjectDetection.from_pretrained(str(detector_dir)).eval()
    post_process = transformers_post_process()
    for h, w, seed in [(96, 128, 0), (150, 200, 1)]:
        image = _photo(h, w, seed)
        pixels = rtdetr_pixels(image, ours.preprocess)
        if (h, w) == INPUT_HW:  # no resize: the processor's rescale, RGB, channels first
            np.testing.assert_array_equal(pixels[0], image.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255))
        with torch.no_grad():
            out = reference(pixel_values=torch.from_numpy(pixels))
        got = post_process(None, out, threshold=ours.score_threshold, target_sizes=[(h, w)])[0]
        person = got["labels"] == 0
        boxes = got["boxes"][person].numpy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
        found = ours.detect(image)
        assert len(found.boxes) == len(boxes) >= 1
        np.testing.assert_allclose(found.boxes, boxes, atol=1e-3)  # pixels; float32 in both
        np.testing.assert_allclose(found.scores, got["scores"][person].numpy(), atol=1e-5)
        # the top-k rule decided something: some person scores above the threshold are not among the kept pairs
        person_scores = torch.sigmoid(out.logits[0, :, 0])
        assert int((person_scores > ours.score_threshold).sum()) > len(boxes)


def _put_in_hub_cache(cache: Path, repo: str, folder: Path) -> None:
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        shutil.copy(folder / name, snapshot / name)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An offline machine with its own (empty) Hugging Face cache; every connection attempt is recorded."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    attempts: list = []
    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: (attempts.append(address),
                                                                         real(self, address))[1])
    return cache, attempts


def test_default_detector_comes_from_the_hub_cache_and_names_every_box(detector_dir, pose_checkpoint, offline_hub,
                                                                        tmp_path, capsys):
    """No --detector: RT-DETR by hub name, found in the cache without the network; the pose JSON says so in the
    header and for each person, and so does the completion record."""
    from sapiens2.inference.detectors import load_rtdetr

    cache, attempts = offline_hub
    _put_in_hub_cache(cache, REPO, detector_dir)
    image = _photo(150, 200, 1)
    cv2.imwrite(str(tmp_path / "a.png"), image[..., ::-1])
    expected = load_rtdetr(detector_dir).detect(image)
    assert len(expected.boxes) >= 1
    rc = main(["predict", "--checkpoint", f"pose={pose_checkpoint}", "--input-size", "64x48", "--device", "cpu",
               "--no-progress", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "a.pose.json").read_text())
    assert doc["box_source"] == doc["detector"] == f"detector:rtdetr:{REPO}"
    assert [p["detector"] for p in doc["people"]] == [f"rtdetr:{REPO}"] * len(expected.boxes)
    np.testing.assert_allclose([p["box"] for p in doc["people"]], expected.boxes, atol=0.01)
    record = json.loads((tmp_path / "out" / "a.done.json").read_text())
    assert record["settings"]["detector"] == f"rtdetr:{REPO}"
    # the other box sources name themselves too
    assert main(["predict", "--checkpoint", f"pose={pose_checkpoint}", "--input-size", "64x48", "--device", "cpu",
                 "--no-progress", "--detector", "none", str(tmp_path / "a.png"), "-o", str(tmp_path / "none")]) == 0
    assert json.loads((tmp_path / "none" / "a.pose.json").read_text())["people"][0]["detector"] == "whole-image"
    assert attempts == []


def test_video_and_file_box_records_name_their_detector():
    from sapiens2.serving.pose_json import frame_pose_record, person_detector
    from sapiens2.tasks.results import PoseResult

    pose = PoseResult(np.array([[1.0, 2.0, 30.0, 40.0]]), np.ones(1), np.zeros((1, 308, 2)), np.ones((1, 308)),
                      box_source=f"detector:rtdetr:{REPO}")
    assert frame_pose_record(pose, frame_index=3, fps=10.0)["people"][0]["detector"] == f"rtdetr:{REPO}"
    assert [person_detector(s) for s in ("detector:hog", "file", "given", "seg", "whole_image")] == \
        ["hog", "boxes-file", "given-boxes", "seg", "whole-image"]


def test_offline_without_the_detector_is_one_clear_error_and_no_other_detector(pose_checkpoint, offline_hub,
                                                                               tmp_path, capsys, monkeypatch):
    from sapiens2.inference.predictor import Predictor
    import sapiens2.tasks.pose.pipeline as pipeline

    cache, attempts = offline_hub
    # were any other detector put in its place, building it would fail the test
    monkeypatch.setattr("sapiens2.tasks.detection.HogPersonDetector",
                        lambda *a, **k: pytest.fail("HOG must not stand in for RT-DETR"))
    monkeypatch.setattr(pipeline, "boxes_from_mask", lambda *a, **k: pytest.fail("seg boxes must not stand in"))
    cv2.imwrite(str(tmp_path / "a.png"), _photo(40, 30, 0))
    rc = main(["predict", "--checkpoint", f"pose={pose_checkpoint}", "--input-size", "64x48", "--device", "cpu",
               "--no-progress", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("sapiens2 predict: error:") == 1
    for words in (f"rtdetr:{REPO}", "offline mode", f"hf download {REPO} config.json preprocessor_config.json "
                  "model.safetensors", "--detector rtdetr:PATH", "--detector hog", "--detector seg",
                  "--detector none"):
        assert words in err
    assert not list((tmp_path / "out").glob("*.json"))  # nothing written: no pose made with another detector
    with pytest.raises(ModelNotAvailableError, match="--detector hog"):
        Predictor("pose", model=str(pose_checkpoint), device="cpu", input_size=(64, 48), cache_dir=cache)
    assert attempts == []
    monkeypatch.setitem(sys.modules, "transformers", None)  # the detect extra not installed
    with pytest.raises(DetectorUnavailableError, match=r"pip install 'sapiens2\[detect\]'.*--detector hog"):
        Predictor("pose", model=str(pose_checkpoint), device="cpu", input_size=(64, 48))


def test_detector_names_and_configs_that_cannot_work_are_refused(tmp_path):
    from sapiens2.cli.predict import check_detector
    from sapiens2.errors import UsageError
    from sapiens2.inference.detectors import DEFAULT_DETECTOR, detector_setting, load_rtdetr
    from sapiens2.tasks.pose.pipeline import make_box_source

    for ok in ("rtdetr", "rtdetr:PekingU/rtdetr_v2_r18vd", f"RTDETR:{tmp_path}", "hog", "none"):
        check_detector(ok)
    for bad in ("rtdetr:", "rtdetr:./no/such/folder", "rtdetr:just-a-name"):
        with pytest.raises(UsageError, match="name a hub repo"):
            check_detector(bad)
    assert detector_setting(None) == detector_setting("auto") == detector_setting("rtdetr") == DEFAULT_DETECTOR
    with pytest.raises(DetectionError, match="resolve_detector"):
        make_box_source("auto")  # the task layer loads nothing and never picks HOG in its place
    with pytest.raises(DetectionError, match="no 'person' class"):
        person_label_id({0: "cat", 1: "dog"})
    assert person_label_id({"0": "bicycle", "1": "Person"}) == 1
    with pytest.raises(DetectionError, match="do_pad"):
        DetrPreprocess.from_config({"do_pad": True})
    with pytest.raises(DetectionError, match="shortest_edge"):
        DetrPreprocess.from_config({"size": {"shortest_edge": 800}})
    assert DetrPreprocess.from_config({"do_normalize": True}).mean == (0.485, 0.456, 0.406)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text("{}")
    with pytest.raises(ModelNotAvailableError, match="lacks preprocessor_config.json, model.safetensors"):
        load_rtdetr(tmp_path / "partial")
    with pytest.raises(ModelNotAvailableError, match="neither a folder nor a hub repo id"):
        load_rtdetr("no/such/thing")


def _real_detector_cached() -> bool:
    from sapiens2.checkpoints.detector_files import DETECTOR_FILES

    from huggingface_hub import try_to_load_from_cache

    return all(isinstance(try_to_load_from_cache(REPO, f), str) for f in DETECTOR_FILES)


@pytest.mark.skipif(not _real_detector_cached(), reason=f"the real {REPO} weights are not in the Hugging Face cache "
                                                        "(no hub access where this suite runs)")
def test_real_default_detector_finds_the_astronaut_where_hog_does_not():
    """With the published weights (where the hub was reachable once): the person in the example portrait and in a
    half-body crop of it, both of which HOG misses."""
    from sapiens2.inference.detectors import load_rtdetr
    from sapiens2.tasks.detection import HogPersonDetector, hog_available

    image = cv2.imread(str(ASTRONAUT))[..., ::-1].copy()
    h, w = image.shape[:2]
    crop = np.ascontiguousarray(image[: h * 3 // 5, w // 5: w * 4 // 5])  # head and shoulders, cut at the chest
    detector = load_rtdetr()
    for picture in (image, crop):
        found = detector.detect(picture)
        assert len(found.boxes) >= 1  # scoring above the 0.5 threshold
        x1, y1, x2, y2 = found.boxes[0]
        assert (x2 - x1) * (y2 - y1) > 0.2 * picture.shape[0] * picture.shape[1]  # the person, not a detail
        if hog_available():
            assert len(HogPersonDetector().detect(picture).boxes) == 0
