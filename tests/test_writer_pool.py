"""The predict job's writer pool (issue 20): a failing write fails its input alone (reported, no completion record,
redone next run) and the job's summary reports the time of every stage, workers' read and write time included."""
from __future__ import annotations

import cv2
import numpy as np
from test_outputs_runner import FakePredictor, write_images

from sapiens2.io import discover_inputs
from sapiens2.serving import PredictJob, image_batches


def test_a_failing_write_fails_its_input_only_and_stages_are_timed(tmp_path, monkeypatch):
    write_images(tmp_path / "in", 6)
    real = image_batches.write_prediction

    def write_prediction(prediction, rgb, base, *args, **kwargs):
        if base.name == "img2":
            raise OSError("disk full")
        return real(prediction, rgb, base, *args, **kwargs)

    monkeypatch.setattr(image_batches, "write_prediction", write_prediction)
    items = discover_inputs(tmp_path / "in").items
    summary = PredictJob(FakePredictor(batch_size=2), ["seg"], tmp_path / "out", max_pending=2).run(items)
    assert [f.path.name for f in summary.failed] == ["img2.png"] and "disk full" in summary.failed[0].reason
    assert summary.done == 5 and summary.images == 6
    out = tmp_path / "out"
    for i in (0, 1, 3, 4, 5):  # every other input's files and completion record are there
        assert (cv2.imread(str(out / f"img{i}.seg.png"), cv2.IMREAD_UNCHANGED)[:, :10] == 1).all()
        assert (out / f"img{i}.done.json").exists()
    assert not (out / "img2.done.json").exists()
    stages = summary.stage_s
    assert {"read", "pre", "forward", "post", "write", "wait_read", "wait_write"} <= set(stages)
    assert abs(stages["forward"] - 6 * 0.002) < 1e-9  # the predictor's own figures, summed
    assert all(seconds >= 0 for seconds in stages.values()) and stages["read"] > 0 and stages["write"] > 0
    line = next(text for text in summary.lines() if text.startswith("stages: "))
    names = [part.rsplit(" ", 2)[0] for part in line[len("stages: "):].split(", ")]
    assert names == ["read", "preprocess", "forward", "postprocess", "write", "waited for reads",
                     "waited for writes"]

    monkeypatch.setattr(image_batches, "write_prediction", real)
    again = PredictJob(FakePredictor(), ["seg"], tmp_path / "out").run(items)  # only the failed input is redone
    assert again.done == 1 and again.skipped == 5 and not again.failed
    assert (out / "img2.done.json").exists()
    assert np.array_equal(cv2.imread(str(out / "img2.seg.png"), cv2.IMREAD_UNCHANGED),
                          cv2.imread(str(out / "img0.seg.png"), cv2.IMREAD_UNCHANGED))
