import json
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


@pytest.fixture()
def one_torch_thread():
    """Tiny models on 2 shared cores: more torch threads only oversubscribe (measured several times slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
