"""A count-based simulated crash: "stop after exactly k committed units" (batches, shards), for tests and demos of
resuming. Deterministic however Ray schedules the work, because the workers themselves count."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["COMMIT_BUDGET_DIR", "claim_commit", "reset_commit_budget"]

COMMIT_BUDGET_DIR = ".commit-budget"


def reset_commit_budget(folder: str | Path) -> None:
    """Forget the slots claimed by an earlier interrupted run (driver, before and after a run)."""
    shutil.rmtree(Path(folder) / COMMIT_BUDGET_DIR, ignore_errors=True)


def claim_commit(folder: str | Path, budget: int) -> bool:
    """Claim one of ``budget`` commit slots; False once all are taken.

    A simulated crash "after k committed units" must not depend on how far Ray Data's streaming executor has
    run ahead of the driver (it often finishes every unit before the driver sees the first), so the workers
    themselves count: each slot is a file created with O_EXCL, atomic across processes and nodes sharing the
    output folder, so exactly ``budget`` units are ever committed however the tasks are scheduled."""
    slots = Path(folder) / COMMIT_BUDGET_DIR
    slots.mkdir(parents=True, exist_ok=True)
    for slot in range(budget):
        try:
            os.close(os.open(slots / f"slot-{slot}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            continue
    return False
