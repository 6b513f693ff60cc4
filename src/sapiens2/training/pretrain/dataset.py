"""Streams of pretraining samples (views of one image + a per-sample seed), endless over epochs, exactly resumable.

Both sources are ``IterableDataset``s split over every consumer (rank x loader worker). A folder is shuffled
per epoch (a permutation seeded by ``seed`` and the epoch) and consumer ``c`` of ``C`` takes positions
``c, c + C, ...`` (each epoch trimmed to a multiple of C). Shards are shuffled per epoch and dealt to consumers
round-robin; with fewer shards than consumers, every consumer streams every shard and keeps its share of the
samples by position instead. A sample's seed (crops and masks) is a hash of (seed, epoch, position in the
epoch), so it is the same however many processes split the stream, and ``skip`` samples per consumer resume a
stream exactly (skipped samples are not decoded).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from ...errors import TrainingConfigError
from ...io.images import decode_image
from ...data.shards import image_member, iter_tar_samples
from .sources import DataSource
from .views import ViewMaker

logger = logging.getLogger(__name__)
_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit hash of integers (splitmix64 steps), for per-sample generator seeds."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x & 0x7FFF_FFFF_FFFF_FFFF


def consumer_id(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(this consumer, number of consumers) over distributed ranks x DataLoader workers."""
    if rank is None or world_size is None:
        ddp = dist.is_available() and dist.is_initialized()
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    info = get_worker_info()
    wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nworkers + wid, world_size * nworkers


class PretrainStream(IterableDataset):
    """Endless stream of ``{"globals", "locals", "seed", "index"}`` items from a :class:`DataSource`.

    ``skip``: samples this consumer already delivered (for resume; with several loader workers, set per worker
    through :meth:`set_skip_per_worker`). ``rank`` / ``world_size`` default to torch.distributed's.
    """

    def __init__(self, source: DataSource, views: ViewMaker, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, max_epochs: int | None = None):
        super().__init__()
        self.source, self.views, self.seed = source, views, int(seed)
        self.rank, self.world_size, self.max_epochs = rank, world_size, max_epochs
        self.skip_per_worker: list[int] = [0]

    def set_skip_per_worker(self, skips: list[int]) -> None:
        self.skip_per_worker = [int(s) for s in skips] or [0]

    # -- order ------------------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(mix_seed(self.seed, epoch, 0x5EED))
        return rng.permutation(len(self.source))

    def _folder_positions(self, epoch: int, cid: int, n: int) -> Iterator[tuple[int, str]]:
        order = self._epoch_order(epoch)
        usable = (len(order) // n) * n
        if usable == 0:
            raise TrainingConfigError(f"{len(order)} images cannot feed {n} consumers (ranks x workers); add images")
        for pos in range(cid, usable, n):
            yield pos, self.source.paths[order[pos]]

    def _shard_samples(self, epoch: int, cid: int, n: int) -> Iterator[tuple[int, Any]]:
        order = self._epoch_order(epoch)
        if len(order) >= n:
            mine, keep_every = [self.source.paths[i] for i in order[cid::n]], False
        else:
            mine, keep_every = [self.source.paths[i] for i in order], True
        pos = 0
        for shard_rank, path in enumerate(mine):
            shard_id = int(order[cid + n * shard_rank]) if not keep_every else int(order[shard_rank])
            for member_pos, (key, group) in enumerate(iter_tar_samples(path)):
                if keep_every:
                    pos += 1
                    if (pos - 1) % n != cid:
                        continue
                # the seed names the sample itself (shard, place in shard), so it is split-independent
                yield mix_seed(shard_id, member_pos), (key, group, path)

    # -- iteration ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid = info.id if info is not None else 0
        cid, n = consumer_id(self.rank, self.world_size)
        skip = self.skip_per_worker[wid] if wid < len(self.skip_per_worker) else 0
        epoch = 0
        while self.max_epochs is None or epoch < self.max_epochs:
            stream = (self._folder_positions(epoch, cid, n) if self.source.kind == "folder"
                      else self._shard_samples(epoch, cid, n))
            for place, payload in stream:
                if skip > 0:
                    skip -= 1
                    continue
                item = self._load(epoch, place, payload)
                if item is not None:
                    yield item
            epoch += 1

    def _load(self, epoch: int, place: int, payload: Any) -> dict[str, Any] | None:
        if self.source.kind == "folder":
            name = payload
            with open(payload, "rb") as handle:
                data = handle.read()
        else:
            key, group, path = payload
            found = image_member(group)
            if found is None:
                logger.warning("shard %s: sample %r has no image member; skipped", path, key)
                return None
            name, data = f"{path}#{key}.{found[0]}", found[1]
        try:
            rgb = decode_image(data, name=str(name)).rgb
        except Exception as exc:  # one bad image must not stop a long run
            logger.warning("skipping unreadable image %s: %s", name, exc)
            return None
        seed = mix_seed(self.seed, epoch, place)
        gen = torch.Generator().manual_seed(seed)
        item = self.views(torch.from_numpy(rgb).permute(2, 0, 1), gen)
        item.pop("boxes")
        item["seed"], item["index"] = seed, place
        return item
