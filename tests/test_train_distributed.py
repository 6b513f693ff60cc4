"""DDP and FSDP2 (gloo, 2 CPU processes) follow the 1-process loss curve at the same global batch."""
from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from sapiens2.data.synth import write_dataset

STEPS = 3
GLOBAL_BATCH = 4


def _overrides(data, out, world, mode):
    return [f"data.train={data}", "data.input_size=[64,48]", "data.num_workers=0", f"num_iters={STEPS}",
            "optim.lr=1e-3", "optim.warmup_iters=1", "progress=false", "save_every=0", "device=cpu",
            f"distributed={mode}", f"data.batch_size={GLOBAL_BATCH // world}", f"output_dir={out}"]


def _worker(rank, world, port, mode, data, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from sapiens2.training.config import load_config
    from sapiens2.training.distributed import cleanup_distributed
    from sapiens2.training.trainer import Trainer
    try:
        result = Trainer(load_config("seg", "sapiens2_tiny", overrides=_overrides(data, out, world, mode))).fit()
        with open(os.path.join(out, f"losses_rank{rank}.json"), "w") as f:
            json.dump(result.losses, f)
    finally:
        cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = write_dataset(root / "data", num=8, seed=5, height=64, width=48, max_people=1, progress=False)
    torch.set_num_threads(1)
    from sapiens2.training.config import load_config
    from sapiens2.training.trainer import Trainer
    result = Trainer(load_config("seg", "sapiens2_tiny", overrides=_overrides(data, root / "one", 1, "ddp"))).fit()
    return data, root, result.losses


@pytest.mark.skipif(sys.platform == "win32", reason="gloo process groups over localhost")
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(reference, mode):
    data, root, single = reference
    out = root / mode
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), mode, str(data), str(out)), nprocs=2)
    losses = [json.loads((out / f"losses_rank{r}.json").read_text()) for r in range(2)]
    assert losses[0] == losses[1]  # every rank logs the global-batch loss
    assert len(losses[0]) == STEPS
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(single), rtol=1e-5, atol=1e-6)
    assert (out / "model.safetensors").exists()  # gathered full state, official keys (FSDP: unsharded)
