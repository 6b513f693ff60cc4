"""Pretraining pieces on their own: masks, views, EMA, losses, export, shard streaming, the collapse guard."""
from __future__ import annotations

import io
import json
import logging
import math
import tarfile

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

import sapiens2
from sapiens2.training.pretrain.collate import PretrainCollate
from sapiens2.training.pretrain.dataset import PretrainStream
from sapiens2.training.pretrain.ema import cosine_momentum, ema_update
from sapiens2.training.pretrain.export import export_backbone
from sapiens2.training.pretrain.losses import DINOClassLoss, mae_pixel_loss, patchify, unpatchify
from sapiens2.training.pretrain.masking import MaskSpec, block_mask, num_masked, random_mask, split_indices
from sapiens2.training.pretrain.model import ObjectiveConfig, PretrainModel
from sapiens2.training.pretrain.monitor import CollapseGuard, embedding_spread, teacher_entropies
from sapiens2.data.shards import iter_tar_samples
from sapiens2.training.pretrain.sources import PretrainDataError, expand_braces, resolve_data
from sapiens2.training.pretrain.views import ViewMaker, ViewSpec

TINY_OBJECTIVE = ObjectiveConfig(decoder_dim=64, decoder_depth=1, decoder_heads=4, head_out_dim=128,
                                 head_hidden_dim=64, head_bottleneck_dim=32)


# -- masks ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["random", "block"])
@pytest.mark.parametrize("ratio,grid", [(0.75, (4, 3)), (0.75, (64, 48)), (0.5, (6, 4)), (0.4, (14, 14)), (0.0, (2, 2))])
def test_mask_hides_exactly_the_ratio(mode, ratio, grid):
    spec = MaskSpec(ratio, mode)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        m = spec.make(*grid, generator=gen)
        assert m.dtype == torch.bool and m.shape == (grid[0] * grid[1],)
        assert int(m.sum()) == round(ratio * grid[0] * grid[1]) == num_masked(m.numel(), ratio)


def test_mask_is_a_function_of_its_seed_and_block_masks_are_blocky():
    a = random_mask(8, 6, 0.75, torch.Generator().manual_seed(1))
    b = random_mask(8, 6, 0.75, torch.Generator().manual_seed(1))
    c = random_mask(8, 6, 0.75, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # block masks have far more masked-masked neighbours than uniform ones
    def adjacency(m, h, w):
        g = m.view(h, w).float()
        return float((g[1:] * g[:-1]).sum() + (g[:, 1:] * g[:, :-1]).sum())
    gen = torch.Generator().manual_seed(0)
    blk = np.mean([adjacency(block_mask(32, 24, 0.4, gen), 32, 24) for _ in range(5)])
    rnd = np.mean([adjacency(random_mask(32, 24, 0.4, gen), 32, 24) for _ in range(5)])
    assert blk > 1.5 * rnd


def test_split_indices_and_bad_ratio():
    masks = torch.stack([random_mask(4, 4, 0.75, torch.Generator().manual_seed(i)) for i in range(3)])
    keep, masked = split_indices(masks)
    assert keep.shape == (3, 4) and masked.shape == (3, 12)
    for j in range(3):
        assert sorted(keep[j].tolist() + masked[j].tolist()) == list(range(16))
        assert masks[j, masked[j]].all() and not masks[j, keep[j]].any()
        assert torch.equal(keep[j], keep[j].sort().values)
    with pytest.raises(ValueError, match="mask ratio"):
        MaskSpec(1.0)
    with pytest.raises(ValueError, match="same number"):
        split_indices(torch.tensor([[True, False], [True, True]]))


# -- views ---------------------------------------------------------------------------------------------
def test_views_never_change_colour():
    spec = ViewSpec(global_size=(64, 48), num_global=2, num_local=2, local_size=(32, 32), flip_prob=0.5)
    maker = ViewMaker(spec)
    assert not any(w in f for f in spec.__dataclass_fields__ for w in ("jitter", "gray", "solar", "blur", "colour",
                                                                         "color", "bright", "contrast"))
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for _ in range(4):  # uniform images: every view pixel keeps the exact colour
        colour = rng.integers(0, 256, 3)
        img = torch.tensor(colour, dtype=torch.uint8)[:, None, None].expand(3, 90, 70).contiguous()
        out = maker(img, gen)
        for v in out["globals"] + out["locals"]:
            back = maker.denormalise(v)
            assert torch.allclose(back, torch.tensor(colour, dtype=torch.float32)[:, None, None].expand_as(back),
                                  atol=1e-3)
    # two colours: every view pixel is a mix of the two (on the segment between them), none invented
    red, blue = torch.tensor([200.0, 30.0, 40.0]), torch.tensor([20.0, 60.0, 220.0])
    img = torch.empty(3, 96, 80)
    img[:, :, :40] = red[:, None, None]
    img[:, :, 40:] = blue[:, None, None]
    for _ in range(6):
        out = maker(img, gen)
        for v in out["globals"] + out["locals"]:
            px = maker.denormalise(v).reshape(3, -1).T
            t = ((px - red) @ (blue - red)) / ((blue - red) @ (blue - red))
            assert t.min() > -1e-4 and t.max() < 1 + 1e-4
            assert torch.allclose(red + t[:, None] * (blue - red), px, atol=1e-2)


def test_views_crop_and_flip():
    maker = ViewMaker(ViewSpec(global_size=(32, 32), global_scale=(0.2, 0.5), flip_prob=0.5))
    img = torch.arange(3 * 64 * 64, dtype=torch.float32).reshape(3, 64, 64) % 251
    gen = torch.Generator().manual_seed(0)
    outs = [maker(img, gen) for _ in range(8)]
    boxes = [b for o in outs for b in o["boxes"]]
    assert len({(b.top, b.left, b.height, b.width) for b in boxes}) > 8
    assert any(b.flipped for b in boxes) and not all(b.flipped for b in boxes)
    assert all(0.2 * 64 * 64 * 0.8 <= b.height * b.width <= 0.5 * 64 * 64 * 1.2 for b in boxes)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        ViewSpec(global_size=(30, 32))


# -- EMA teacher ---------------------------------------------------------------------------------------
def test_momentum_schedule():
    assert cosine_momentum(0, 100) == pytest.approx(0.994)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    vals = [cosine_momentum(s, 100) for s in range(101)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert cosine_momentum(50, 100) == pytest.approx(0.997)


def test_teacher_is_the_ema_of_the_student():
    torch.manual_seed(0)
    model = PretrainModel(sapiens2.build_backbone("tiny", img_size=(32, 32)), TINY_OBJECTIVE)
    names = [n for n, _ in model.teacher.named_parameters()]
    assert names and all(not p.requires_grad for p in model.teacher.parameters())
    expected = {n: p.detach().clone().double() for n, p in model.teacher.named_parameters()}
    s_params = dict(model.student.named_parameters())
    for step, m in enumerate((0.9, 0.99, 0.5)):
        with torch.no_grad():
            for p in model.student.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        model.update_teacher(m)
        for n in names:
            expected[n] = m * expected[n] + (1 - m) * s_params[n].detach().double()
    for n, p in model.teacher.named_parameters():
        torch.testing.assert_close(p.double(), expected[n], rtol=1e-5, atol=1e-6)
    model.train()
    assert not model.teacher.training and model.student.training


# -- losses --------------------------------------------------------------------------------------------
def test_patchify_and_mae_loss():
    x = torch.randn(2, 3, 32, 48)
    p = patchify(x, 16)
    assert p.shape == (2, 6, 768)
    assert torch.equal(unpatchify(p, (2, 3), 16), x)
    assert torch.equal(p[1, 4].view(16, 16, 3).permute(2, 0, 1), x[1, :, 16:32, 16:32])
    masked = torch.tensor([[0, 5], [1, 2]])
    target = (p - p.mean(-1, keepdim=True)) / (p.var(-1, keepdim=True) + 1e-6).sqrt()
    assert mae_pixel_loss(target, x, masked, 16).item() < 1e-10
    wrong = target.clone()
    wrong[0, 3] += 5.0  # a visible patch: not counted
    assert mae_pixel_loss(wrong, x, masked, 16).item() < 1e-10
    wrong[0, 5] += 1.0  # a masked one: 1/4 of the masked patches off by 1 everywhere
    assert mae_pixel_loss(wrong, x, masked, 16).item() == pytest.approx(0.25, rel=1e-5)


def test_dino_loss_crosses_views_and_centres():
    loss = DINOClassLoss(4, student_temp=0.1, center_momentum=0.9)
    t = [torch.tensor([[10.0, 0, 0, 0]]), torch.tensor([[0, 10.0, 0, 0]])]
    probs = [loss.teacher_probs(x, 0.04) for x in t]
    s_match = [torch.tensor([[0, 10.0, 0, 0]]), torch.tensor([[10.0, 0, 0, 0]])]  # each matches the OTHER view
    s_same = [torch.tensor([[10.0, 0, 0, 0]]), torch.tensor([[0, 10.0, 0, 0]])]
    assert loss(s_match, probs).item() < 1e-3 < loss(s_same, probs).item()
    loss.update_center(t)
    assert torch.allclose(loss.center, 0.1 * torch.tensor([[5.0, 5.0, 0, 0]]))


def test_collapse_guard_and_statistics(caplog):
    k = 64
    uniform = torch.full((8, k), 1.0 / k)
    one_hot_same = torch.zeros(8, k)
    one_hot_same[:, 3] = 1
    assert teacher_entropies(uniform) == pytest.approx((1.0, 1.0))
    assert teacher_entropies(one_hot_same) == pytest.approx((0.0, 0.0), abs=1e-6)
    assert embedding_spread(torch.randn(256, 32)) == pytest.approx(1.0, abs=0.15)
    assert embedding_spread(torch.ones(16, 32) + 1e-6 * torch.randn(16, 32)) < 1e-3
    guard = CollapseGuard(grace_steps=10, warn_every=5)
    healthy = {"student_spread": 0.7, "teacher_entropy": 0.3, "teacher_batch_entropy": 0.6}
    with caplog.at_level(logging.WARNING):
        assert guard.check(20, healthy) == []
        assert len(guard.check(5, {**healthy, "student_spread": 0.001})) == 1  # in the grace period: no warning
        assert not caplog.records
        problems = guard.check(20, {"student_spread": 0.001, "teacher_entropy": 0.999, "teacher_batch_entropy": 0.01})
    assert len(problems) == 3 and "collapse" in caplog.text


# -- masked student --------------------------------------------------------------------------------------
def test_student_processes_only_visible_tokens():
    torch.manual_seed(0)
    model = PretrainModel(sapiens2.build_backbone("tiny", img_size=(64, 48)), TINY_OBJECTIVE)
    items = [{"globals": [torch.randn(3, 64, 48), torch.randn(3, 64, 48)], "locals": [], "seed": i, "index": i}
             for i in range(2)]
    batch = PretrainCollate(MaskSpec(0.75))(items)
    seen = []
    hook = model.student.backbone.blocks[0].register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    out = model.student(batch["globals"], batch["keep"], batch["masked"])
    hook.remove()
    assert seen == [torch.Size([4, 9 + 3, 64])]  # 2 views x 2 images, 9 prefix + 3 of 12 patches
    assert out["pixels"].shape == (4, 12, 768) and out["patch_logits"].shape == (4, 9, 128)
    loss, metrics = model(batch)
    loss.backward()
    assert math.isfinite(loss.item()) and {"loss_mae", "loss_dino", "loss_ibot", "teacher_entropy",
                                           "student_spread"} <= metrics.keys()


# -- export ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokenizer", [False, True])
def test_export_matches_the_official_layout_and_loads(tmp_path, official_dir, tokenizer):
    torch.manual_seed(0)
    size = (128, 128) if tokenizer else (64, 48)
    model = PretrainModel(sapiens2.build_backbone("tiny", img_size=size, use_tokenizer=tokenizer), TINY_OBJECTIVE)
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.01)
    path = export_backbone(model, tmp_path / "bb.safetensors")
    ref = official_dir / ("backbone-tiny-4k.safetensors" if tokenizer else "backbone-tiny.safetensors")
    with safe_open(str(path), "pt") as ours, safe_open(str(ref), "pt") as official:
        assert set(ours.keys()) == set(official.keys())
        for key in official.keys():
            a, b = ours.get_tensor(key), official.get_tensor(key)
            assert a.shape == b.shape and a.dtype == b.dtype, key
        assert torch.equal(ours.get_tensor("rope_embed.periods"), official.get_tensor("rope_embed.periods"))
    loaded = sapiens2.load_backbone(path)
    assert loaded.arch.name == "sapiens2_tiny" and loaded.use_tokenizer == tokenizer
    torch.testing.assert_close(loaded.state_dict()["blocks.3.attn.wq.weight"],
                               model.teacher.backbone.state_dict()["blocks.3.attn.wq.weight"])
    student = export_backbone(model, tmp_path / "st.safetensors", which="student")
    assert not torch.equal(sapiens2.load_backbone(student).cls_token, loaded.cls_token)


# -- data ------------------------------------------------------------------------------------------------
def _write_shard(path, keys, rng):
    with tarfile.open(path, "w") as tar:
        for key in keys:
            img = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
            ok, jpg = cv2.imencode(".jpg", img)
            for name, data in ((f"{key}.jpg", jpg.tobytes()), (f"{key}.json", json.dumps({"key": key}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_shards_stream_and_split(tmp_path):
    rng = np.random.default_rng(0)
    for s in range(3):
        _write_shard(tmp_path / f"shard-{s:06d}.tar", [f"s{s}_{i:03d}" for i in range(4)], rng)
    assert expand_braces("a-{00..02}.tar") == ["a-00.tar", "a-01.tar", "a-02.tar"]
    src = resolve_data(str(tmp_path / "shard-{000000..000002}.tar"))
    assert src.kind == "shards" and len(src) == 3
    assert resolve_data(str(tmp_path)).paths == src.paths == resolve_data(str(tmp_path / "shard-*.tar")).paths
    groups = list(iter_tar_samples(src.paths[0]))
    assert [k for k, _ in groups] == [f"s0_{i:03d}" for i in range(4)] and set(groups[0][1]) == {"jpg", "json"}
    maker = ViewMaker(ViewSpec(global_size=(32, 16), num_global=2))

    def seeds(rank, world):
        stream = PretrainStream(src, maker, seed=1, rank=rank, world_size=world, max_epochs=1)
        return [it["seed"] for it in stream]
    one = seeds(0, 1)
    assert len(one) == 12 and len(set(one)) == 12
    assert sorted(seeds(0, 2) + seeds(1, 2)) == sorted(one)  # two ranks split the same samples
    assert sorted(seeds(0, 4) + seeds(1, 4) + seeds(2, 4) + seeds(3, 4)) == sorted(one)  # fewer shards than ranks
    stream = PretrainStream(src, maker, seed=1, rank=0, world_size=1, max_epochs=1)
    stream.set_skip_per_worker([5])
    assert [it["seed"] for it in stream] == one[5:]  # resume skips exactly
    with pytest.raises(PretrainDataError, match="does not exist"):
        resolve_data(str(tmp_path / "missing"))
    with pytest.raises(PretrainDataError, match="matches no files"):
        resolve_data(str(tmp_path / "none-*.tar"))
