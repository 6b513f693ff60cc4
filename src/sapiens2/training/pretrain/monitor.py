"""Collapse monitoring: teacher output entropy and the per-dimension spread of student embeddings.

Self-distillation can collapse two ways. Every image gets the same target (one prototype wins): the entropy of
the batch-mean teacher distribution falls towards 0. Or targets turn uniform: the mean per-sample entropy rises
towards log K. Independently, the student embeddings may stop varying across images: the per-dimension std of
L2-normalised embeddings across the batch falls towards 0 (for spread-out unit vectors in C dims it is about
1/sqrt(C), so we report it times sqrt(C): ~1 healthy, -> 0 collapsed). Entropies are reported over log K.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of distributions (..., K) over log K, in [0, 1]."""
    p = probs.float().clamp_min(1e-12)
    return -(p * p.log()).sum(-1) / math.log(probs.shape[-1])


def teacher_entropies(probs: torch.Tensor) -> tuple[float, float]:
    """(mean per-sample entropy, entropy of the batch-mean distribution) of teacher probabilities (N, K)."""
    return float(normalised_entropy(probs).mean()), float(normalised_entropy(probs.float().mean(0)))


def embedding_spread(embeddings: torch.Tensor) -> float:
    """Mean per-dimension std across the batch of L2-normalised embeddings (N, C), times sqrt(C)."""
    if embeddings.shape[0] < 2:
        return float("nan")
    z = F.normalize(embeddings.detach().float(), dim=-1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[-1]))


@dataclass
class CollapseGuard:
    """Warns (through ``logging``) when the monitored statistics show collapse, after ``grace_steps``.

    Right after random initialisation the student's class token barely depends on the image (LayerScale starts
    at 1e-4), so the spread is small before any collapse could have happened: hence the grace period.
    """

    min_spread: float = 0.05
    max_sample_entropy: float = 0.98
    min_batch_entropy: float = 0.05
    grace_steps: int = 100
    warn_every: int = 100
    _last_warned: int = -(10**9)

    def check(self, step: int, metrics: dict[str, float]) -> list[str]:
        """The collapse symptoms present in ``metrics`` (keys ``student_spread``, ``teacher_entropy``,
        ``teacher_batch_entropy``); logs a warning at most every ``warn_every`` steps."""
        problems = []
        spread = metrics.get("student_spread", float("nan"))
        if spread == spread and spread < self.min_spread:
            problems.append(f"student embedding spread {spread:.3g} < {self.min_spread} (dimensional collapse)")
        ent = metrics.get("teacher_entropy", float("nan"))
        if ent == ent and ent > self.max_sample_entropy:
            problems.append(f"teacher entropy {ent:.3f} of log K > {self.max_sample_entropy} (uniform collapse)")
        bent = metrics.get("teacher_batch_entropy", float("nan"))
        if bent == bent and bent < self.min_batch_entropy:
            problems.append(f"teacher batch entropy {bent:.3f} of log K < {self.min_batch_entropy} "
                            "(one prototype dominates)")
        if problems and step >= self.grace_steps and step - self._last_warned >= self.warn_every:
            self._last_warned = step
            logger.warning("possible collapse at step %d: %s", step, "; ".join(problems))
        return problems
