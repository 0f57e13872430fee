"""Per-step schedules: learning rate (warmup + cosine/step/constant) and EMA momentum.

Pure functions of the optimizer step, so a resumed run gets exactly the values an
uninterrupted run would have had (no hidden state beyond the step counter).
"""

from __future__ import annotations

import math
from typing import Sequence


def lr_factor(step: int, total_steps: int, *, schedule: str = "cosine", warmup_steps: int = 0,
              milestones: Sequence[float] = (0.6, 0.8), gamma: float = 0.1, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based).

    Linear warmup from 1/warmup_steps to 1 over `warmup_steps`, then:
    cosine: decays from 1 to `min_ratio` at `total_steps`; step: times `gamma` at each
    milestone (fractions of `total_steps`); constant: 1.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    total = max(1, total_steps)
    if schedule == "step":
        passed = sum(step >= round(m * total) for m in milestones)
        return gamma ** passed
    if schedule == "cosine":
        span = max(1, total - warmup_steps)
        t = min(1.0, max(0.0, (step - warmup_steps) / span))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine, step or constant")


def momentum_at(step: int, total_steps: int, base: float, schedule: str = "constant") -> float:
    """EMA momentum at optimizer step `step`: constant `base`, or BYOL's cosine ramp base -> 1."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        t = min(1.0, max(0.0, step / max(1, total_steps)))
        return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown momentum schedule {schedule!r}; choose constant or cosine")


def build_lr_scheduler(optimizer, *, total_steps: int, warmup_steps: int, schedule: str,
                       milestones: Sequence[float] = (0.6, 0.8), gamma: float = 0.1, min_ratio: float = 0.0):
    """A torch LambdaLR stepping once per optimizer step (Lightning `interval="step"`)."""
    import torch

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, schedule=schedule, warmup_steps=warmup_steps,
                         milestones=milestones, gamma=gamma, min_ratio=min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
