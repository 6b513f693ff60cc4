"""Checkpoints: model weights as safetensors in the official key layout, training state beside them.

``<output_dir>/checkpoints/step_00001000/`` holds ``model.safetensors`` (exactly ``backbone.*`` + ``decode_head.*``:
``sapiens2 predict --checkpoint``, :func:`sapiens2.load_model` and the official code load it) and
``training_state.pt`` (optimizer, scheduler, RNG states, step, config). A checkpoint folder is written under a
temporary name and renamed into place, so a crash never leaves a half-written one; the last ``keep_last`` are
kept. ``<output_dir>/model.safetensors`` is the final model.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, RunExistsError
from ..io.writers import atomic_path

__all__ = ["CHECKPOINT_DIR", "MODEL_FILE", "STATE_FILE", "save_weights", "save_checkpoint", "list_checkpoints",
           "latest_checkpoint", "load_weights", "load_training_state", "rng_state", "set_rng_state",
           "prepare_run_folder"]

logger = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"


def _official_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    bad = [k for k in state if not k.startswith(("backbone.", "decode_head."))]
    if bad:
        raise CheckpointError(f"model state has keys outside backbone.* / decode_head.*: {bad[:5]}")
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_weights(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write an official-key state dict as safetensors, atomically (temporary file, then rename)."""
    path = Path(path)
    with atomic_path(path) as temp:
        save_file(_official_only(state), str(temp), metadata={"format": "pt", **(metadata or {})})
    return path


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()
             and (p / MODEL_FILE).is_file() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _run_traces(output_dir: Path, run_files: tuple[str, ...]) -> list[str]:
    """What in ``output_dir`` belongs to an earlier run: checkpoint folders (complete or not) and run files."""
    root = output_dir / CHECKPOINT_DIR
    steps = sorted(p.name for p in root.iterdir() if p.name.startswith(("step_", ".step_"))) if root.is_dir() else []
    traces = [f"{CHECKPOINT_DIR}/{steps[-1]}" + (f" (and {len(steps) - 1} more)" if len(steps) > 1 else "")] \
        if steps else []
    return traces + [name for name in run_files if (output_dir / name).exists()]


def prepare_run_folder(output_dir: str | Path, *, resume: bool, overwrite: bool, run_files: tuple[str, ...],
                       is_main: bool = True) -> None:
    """Refuse to start a new run in a folder that holds another one, or clear that run when ``overwrite``.

    A fresh run would keep the old ``checkpoints/step_*`` beside its own; the newest of them -- possibly the old
    run's -- is what a later resume continues, so two runs would be mixed. ``run_files``: the run's other files
    (metrics, final model, ...), deleted with the checkpoints. Call it on every rank; only the main one deletes.
    """
    output_dir = Path(output_dir)
    traces = _run_traces(output_dir, run_files)
    if resume or not traces:
        return
    if not overwrite:
        raise RunExistsError(f"{output_dir} holds another run ({', '.join(traces)}): continue it with --resume, "
                             "start over with --overwrite (deletes that run), or choose another output folder")
    if is_main:
        logger.warning("--overwrite: deleting the earlier run in %s (%s)", output_dir, ", ".join(traces))
        shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)
        for name in run_files:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def save_checkpoint(output_dir: str | Path, step: int, model_state: dict[str, torch.Tensor],
                    training_state: dict[str, Any], metadata: dict[str, str] | None = None,
                    keep_last: int = 3) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically and prune to the newest ``keep_last``. Main process only."""
    root = Path(output_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".step_{step:08d}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_weights(tmp / MODEL_FILE, model_state, {**(metadata or {}), "step": str(step)})
        with open(tmp / STATE_FILE, "wb") as f:
            torch.save(training_state, f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            old = root / f".old_{final.name}.{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if keep_last > 0:
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", final)
    return final


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {path}")
    return load_file(str(path))


def load_training_state(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)
