"""Training logs: a long-format CSV (``step,name,value``) always, TensorBoard scalars when asked and installed."""
from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from pathlib import Path

__all__ = ["MetricLogger", "read_metrics_csv"]

logger = logging.getLogger(__name__)


class MetricLogger:
    """Appends scalars to ``<output_dir>/metrics.csv`` (and TensorBoard events under ``<output_dir>/tb``).

    Only the main process should create one with ``enabled=True``; others get a no-op logger. On resume the CSV
    is cut back to the resumed step so that it holds exactly one uninterrupted history.
    """

    def __init__(self, output_dir: str | Path, kind: str = "csv", enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.csv"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = read_metrics_csv(self.path) if resume_step is not None and self.path.exists() else []
        rows = [r for r in rows if r[0] <= resume_step] if resume_step is not None else []
        with open(self.path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "name", "value"])
            w.writerows(rows)
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(output_dir) / "tb"), purge_step=resume_step)
            except ImportError:
                logger.warning("tensorboard is not installed; logging to %s only", self.path)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for k, v in scalars.items():
                w.writerow([step, k, repr(v)])
        if self._tb is not None:
            for k, v in scalars.items():
                if math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics_csv(path: str | Path) -> list[tuple[int, str, float]]:
    """Rows of a metrics.csv as (step, name, value)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        return [(int(s), n, float(v)) for s, n, v in reader]
