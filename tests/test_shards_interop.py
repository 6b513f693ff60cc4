"""Shards written by the curation pipeline stream into pretraining unchanged (one reader serves both)."""
import itertools

import cv2
import numpy as np

from sapiens2.curation.shards import iter_shards, write_index, write_shard
from sapiens2.training.pretrain.dataset import PretrainStream
from sapiens2.training.pretrain.sources import resolve_data
from sapiens2.training.pretrain.views import ViewMaker, ViewSpec


def test_curated_shards_load_in_pretraining(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        path = tmp_path / f"img{i}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (96, 80, 3), dtype=np.uint8))
        samples.append({"row": {"path": str(path), "offset": -1, "size": -1, "source": str(path)},
                        "meta": {"key": f"{i:06d}", "boxes": [[1, 2, 30, 60]]}})
    shard_dir = tmp_path / "shards"
    assert write_shard(shard_dir / "shard-000000.tar", samples) == 4
    write_index(shard_dir, [{"name": "shard-000000.tar", "count": 4}])

    curated = list(iter_shards(shard_dir))
    assert [k for k, _, _ in curated] == ["000000", "000001", "000002", "000003"]
    assert curated[0][1].shape == (96, 80, 3) and curated[0][2]["boxes"] == [[1, 2, 30, 60]]

    source = resolve_data(str(shard_dir))
    assert source.kind == "shards"
    views = ViewMaker(ViewSpec(global_size=(64, 48), num_global=2))
    items = list(itertools.islice(iter(PretrainStream(source, views, seed=0, rank=0, world_size=1)), 4))
    assert len(items) == 4
    assert all(tuple(v.shape) == (3, 64, 48) for item in items for v in item["globals"])
