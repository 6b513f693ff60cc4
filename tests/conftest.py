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
