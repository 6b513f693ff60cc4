"""DDP and FSDP2 (gloo, 2 CPU processes) follow the 1-process loss curve at the same global batch, save the 1-process
model, and an interrupted FSDP run resumes exactly."""
from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp
from safetensors import safe_open

import sapiens2

from sapiens2.data.synth import write_dataset

STEPS = 3
GLOBAL_BATCH = 4


def _overrides(data, out, world, mode):
    return [f"data.train={data}", "data.input_size=[64,48]", "data.num_workers=0", f"num_iters={STEPS}", 
            "optim.lr=1e-3", "optim.warmup_iters=1", "progress=false", "save_every=0", "device=cpu",
            f"distributed={mode}", f"data.batch_size={GLOBAL_BATCH // world}", f"output_dir={out}"]


def _worker(rank, world, port, mode, data, out, stop_after=None, resume=False):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from sapiens2.training.config import load_config
    from sapiens2.training.distributed import cleanup_distributed
    from sapiens2.training.trainer import Trainer
    try:
        config = load_config("seg", "sapiens2_tiny", overrides=_overrides(data, out, world, mode))
        result = Trainer(config, stop_after=stop_after, resume=resume).fit()
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


def _weights(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def spawn(reference):
    """Run a 2-process job once per name (the FSDP run is shared by two tests): name -> its output folder."""
    data, root, _ = reference
    done: dict[str, object] = {}

    def run(name, mode, folder=None, **kw):
        if name not in done:
            out = root / (folder or name)
            out.mkdir(exist_ok=True)
            mp.spawn(_worker, args=(2, _free_port(), mode, str(data), str(out), kw.get("stop_after"),
                                    kw.get("resume", False)), nprocs=2)
            done[name] = out
        return done[name]

    return run


def _cancelled_by_norm(model: torch.nn.Module) -> set[str]:
    """Biases of convolutions followed directly by an InstanceNorm without affine: per-channel constants that the
    norm subtracts again, so they never change the output and their true gradient is 0."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            layers = list(module)
            for i, (a, b) in enumerate(zip(layers, layers[1:])):
                if getattr(a, "bias", None) is not None and isinstance(b, torch.nn.InstanceNorm2d) and not b.affine:
                    names.add(f"{prefix}.{i}.bias")
    return names


needs_gloo = pytest.mark.skipif(sys.platform == "win32", reason="gloo process groups over localhost")


@needs_gloo
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(reference, spawn, mode):
    data, root, single = reference
    out = spawn(mode, mode)
    losses = [json.loads((out / f"losses_rank{r}.json").read_text()) for r in range(2)]
    assert losses[0] == losses[1]  # every rank logs the global-batch loss
    assert len(losses[0]) == STEPS
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(single), rtol=1e-5, atol=1e-6)
    # the saved model (FSDP: gathered from the shards, unsharded) is the one-process model, official keys
    saved, one = _weights(out / "model.safetensors"), _weights(root / "one" / "model.safetensors")
    assert saved.keys() == one.keys()
    free = _cancelled_by_norm(sapiens2.build_model("seg", "sapiens2_tiny", img_size=(64, 48)))
    assert free  # the seg head's conv biases before affine-free InstanceNorms
    for k in one:  # only the order of float additions in the gradient reduction differs...
        if k in free:  # ...except where the true gradient is 0: AdamW turns rounding noise into steps of up to lr
            assert (saved[k] - one[k]).abs().max() <= 1e-3 * STEPS, k
        else:
            torch.testing.assert_close(saved[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    x = torch.randn(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(sapiens2.load_model(out / "model.safetensors", img_size=(64, 48))(x),
                                   sapiens2.load_model(root / "one" / "model.safetensors", img_size=(64, 48))(x),
                                   rtol=1e-4, atol=1e-4)


@needs_gloo
def test_fsdp_run_resumes_exactly(reference, spawn):
    """Interrupted after step 1 (sharded optimiser state gathered into the checkpoint), resumed on 2 processes: the
    same curve and bit-identical weights as the uninterrupted FSDP run."""
    full = spawn("fsdp", "fsdp")
    cut = spawn("fsdp_cut", "fsdp", stop_after=1)
    first = json.loads((cut / "losses_rank0.json").read_text())
    assert not (cut / "model.safetensors").exists() and len(first) == 1
    spawn("fsdp_resume", "fsdp", folder="fsdp_cut", resume=True)
    rest = [json.loads((cut / f"losses_rank{r}.json").read_text()) for r in range(2)]
    assert rest[0] == rest[1] and len(rest[0]) == STEPS - 1  # started after the checkpoint, not from scratch
    assert first + rest[0] == json.loads((full / "losses_rank0.json").read_text())
    resumed, uninterrupted = _weights(cut / "model.safetensors"), _weights(full / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
