"""The task table: one entry per task, and every layer's per-task table in step with it.

A toy task (a 1-channel dense head) is added here, in the test alone, and runs through build, predict, write
and one training step: what adding a seventh task takes is one entry per layer, nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from sapiens2 import Predictor
from sapiens2.cli.predict import parse_tasks
from sapiens2.errors import UnknownTaskError
from sapiens2.evaluation import METRICS
from sapiens2.evaluation.runner import EVALUATIONS
from sapiens2.models import build_model
from sapiens2.models.heads import task_table
from sapiens2.models.heads.config_types import DenseHeadConfig
from sapiens2.models.heads.dense import DenseTaskHead
from sapiens2.models.heads.task_table import TASK_TABLE, TaskSpec, resolve_task, task_aliases, task_names
from sapiens2.serving import outputs
from sapiens2.serving.outputs import OutputOptions, TaskOutputs, write_prediction
from sapiens2.tasks import image_tasks
from sapiens2.tasks.dense import crop_padding, dense_input, upsample_to_hwc
from sapiens2.training.config import TRAIN_TASKS, load_config
from sapiens2.training.losses import task_loss
from sapiens2.training.losses.l1 import masked_l1
from sapiens2.training.trainer import make_targets

INPUT_HW = (64, 48)
POINTMAP_HW = (256, 192)  # the smallest input whose grid the pointmap scale branch can take


def _size(task: str) -> tuple[int, int]:
    return POINTMAP_HW if task == "pointmap" else INPUT_HW


# -- every layer's table holds each task exactly once ---------------------------------------------------------
def test_every_layer_table_matches_the_task_table():
    names = task_names()
    assert len(set(names)) == len(names)
    assert set(task_loss.LOSS_TABLE) == set(names)  # one loss per task
    assert set(outputs.TASK_OUTPUTS) == set(names)  # one set of output files per task
    # seg and pose are composed by the Predictor itself (they feed each other); every other task maps an image
    assert set(image_tasks.IMAGE_TASKS) == set(names) - {"seg", "pose"}
    assert set(METRICS) == set(EVALUATIONS) == set(TRAIN_TASKS)  # a metric for every task that can be trained
    aliases = [a for spec in TASK_TABLE for a in spec.aliases]
    assert len(set(aliases)) == len(aliases) and not set(aliases) & set(names)


def test_head_classes_name_their_final_conv_as_the_table_does():
    for spec in TASK_TABLE:
        model = build_model(spec.name, "sapiens2_tiny", img_size=_size(spec.name), device="meta")
        conv = getattr(model.decode_head, spec.predictor_name)
        assert conv.out_channels == spec.out_channels
        assert any(k.startswith(f"decode_head.{spec.predictor_name}.") for k in model.state_dict())


# -- one set of names and one error, everywhere -------------------------------------------------------------
@pytest.mark.parametrize("name,task", [("bodyseg", "seg"), ("Segmentation", "seg"), ("keypoints", "pose"),
                                       ("normals", "normal"), ("depth", "pointmap"), ("alpha", "matting"),
                                       ("matte", "matting"), ("albedo", "albedo")])
def test_cli_predictor_and_config_files_accept_the_same_names(name, task, tmp_path):
    assert resolve_task(name) == task
    assert parse_tasks([name]) == [task]
    model = build_model(task, "sapiens2_tiny", img_size=_size(task))
    assert Predictor([name], model=model, device="cpu", mask_with_seg=False, detector="none").tasks == (task,)
    if task in TRAIN_TASKS:
        config_file = tmp_path / "config.yaml"
        config_file.write_text(f"task: {name}\n")
        assert load_config(task, "sapiens2_tiny", config_file).task == task
        assert load_config(name, "sapiens2_tiny").task == task
        assert load_config(task, "sapiens2_tiny", overrides=[f"task={name}"]).task == task


def test_unknown_task_is_one_error_everywhere():
    with pytest.raises(UnknownTaskError) as direct:
        resolve_task("bodyseeg")
    message = str(direct.value)
    assert "did you mean 'seg'" in message
    for name in task_names():
        assert name in message
    for alias in task_aliases():
        assert alias in message
    for call in (lambda: parse_tasks(["bodyseeg"]), lambda: Predictor(["bodyseeg"]),
                 lambda: load_config("bodyseeg"), lambda: build_model("bodyseeg", "sapiens2_tiny", device="meta"),
                 lambda: task_loss.build_task_loss("bodyseeg")):
        with pytest.raises(UnknownTaskError) as caught:
            call()
        assert str(caught.value) == message


# -- a toy task, added in this test alone -------------------------------------------------------------------
class ToyHead(DenseTaskHead):
    """One channel per pixel, on the shared dense decoder: the head is its final conv's name."""

    PREDICTOR_NAME = "conv_toy"


@dataclass(frozen=True)
class ToyLossConfig:
    l1_weight: float = 1.0


def _toy_terms(loss, pred: torch.Tensor, targets) -> dict[str, torch.Tensor]:
    return {"loss_l1": loss.config.l1_weight * masked_l1(pred, targets["toy"], targets.get("mask"))}


def _toy_finish(output, padding, image_hw, mask):
    return upsample_to_hwc(crop_padding(output.float(), padding), image_hw)[..., 0]


def _toy_write(out, prediction, image_rgb, result, options) -> None:
    if path := out(".toy.npy"):
        np.save(path, result)


TOY = TaskSpec("toy", DenseHeadConfig, ToyHead, 1,
               {"*": dict(upsample_channels=(16, 16, 16, 16), conv_out_channels=(8, 8))}, aliases=("toyish",))


@pytest.fixture
def toy_task(monkeypatch):
    monkeypatch.setattr(task_table, "TASK_TABLE", TASK_TABLE + (TOY,))
    monkeypatch.setitem(task_loss.LOSS_TABLE, "toy", task_loss.TaskLossEntry(ToyLossConfig, _toy_terms))
    monkeypatch.setitem(image_tasks.IMAGE_TASKS, "toy", image_tasks.ImageTaskIO(dense_input, _toy_finish))
    monkeypatch.setitem(outputs.TASK_OUTPUTS, "toy", TaskOutputs(((".toy.npy", False),), lambda *a, **k: None,
                                                                 _toy_write))


def test_a_toy_task_builds_predicts_writes_and_trains(toy_task, tmp_path: Path):
    torch.manual_seed(0)
    model = build_model("toyish", "sapiens2_tiny", img_size=INPUT_HW)
    assert model.task == "toy" and model.decode_head.conv_toy.out_channels == 1

    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    predictor = Predictor(["toy"], model=model, device="cpu", mask_with_seg=False)
    prediction = predictor.predict(image)
    assert prediction.get("toy").shape == (40, 30)

    written = write_prediction(prediction, image, tmp_path / "img", ["toy"], OutputOptions())
    assert [p.name for p in written] == ["img.toy.npy"]
    np.testing.assert_array_equal(np.load(written[0]), prediction.get("toy"))

    loss_fn = task_loss.build_task_loss("toy")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    batch = {"image": torch.randn(2, 3, *INPUT_HW), "toy": torch.randn(2, 1, *INPUT_HW),
             "mask": torch.ones(2, 1, *INPUT_HW, dtype=torch.bool)}
    before = model.decode_head.conv_toy.weight.detach().clone()
    model.train()
    total, terms = loss_fn(model(batch["image"]), make_targets("toy", batch, 1.0))
    total.backward()
    optimizer.step()
    assert set(terms) == {"loss_l1"} and torch.isfinite(total)
    assert not torch.equal(before, model.decode_head.conv_toy.weight)
