import json
import os
from pathlib import Path

import pytest
import torch

OFFICIAL = Path(__file__).parent / "data" / "official"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    return OFFICIAL


@pytest.fixture(scope="session")
def official_cases() -> dict:
    return json.loads((OFFICIAL / "cases.json").read_text())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error, the measure the official fixture is judged by (<= 1e-4)."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


SPEC = Path(__file__).parent / "data" / "spec"


def spec_state_dict(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Keys -> (shape, dtype) from the '# state_dict' section of an official module listing."""
    out, started = {}, False
    for line in (SPEC / name).read_text().splitlines():
        if line.startswith("# state_dict"):
            started = True
            continue
        if started and line.strip():
            key, rest = line.split(" ", 1)
            shape, dtype = rest.rsplit(" ", 1)
            out[key] = (tuple(int(s) for s in shape.strip("()").replace(" ", "").split(",") if s), dtype)
    return out


_DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_leaks_between_tests():
    """Every test starts with the process's torch thread count and no torchrun variables, whatever the previous
    test (or a module fixture) set: results of some kernels depend on the thread count (F.interpolate rounds an
    ulp differently on one thread), and a leaked RANK makes later code think it runs distributed."""
    threads = torch.get_num_threads()
    env = {k: os.environ.get(k) for k in _DISTRIBUTED_ENV}
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def one_torch_thread():
    """Tiny models on 2 shared cores: more torch threads only oversubscribe (measured several times slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def write_tiny_checkpoints(folder: Path, tasks, img_size) -> dict[str, Path]:
    """Random-weight ``sapiens2_tiny`` task checkpoints in the official layout, ``folder/tiny_<task>.safetensors``;
    task i seeded with i. ``img_size``: (H, W), or a callable task -> (H, W)."""
    from safetensors.torch import save_file

    from sapiens2.models.task_model import build_model

    paths = {}
    for i, task in enumerate(tasks):
        torch.manual_seed(i)
        model = build_model(task, "sapiens2_tiny", img_size=img_size(task) if callable(img_size) else img_size)
        paths[task] = Path(folder) / f"tiny_{task}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[task]))
    return paths
