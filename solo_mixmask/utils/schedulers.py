"""Learning-rate schedules as multiplicative factors of each parameter group's base lr."""

from __future__ import annotations

import math
from typing import Callable, Sequence


def warmup_cosine(total: int, warmup: int, start_factor: float,
                  min_factor: float) -> Callable[[int], float]:
    """Linear warm-up from ``start_factor`` to 1 over ``warmup`` steps, then cosine to
    ``min_factor`` at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return start_factor + (1 - start_factor) * step / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def step_decay(milestones: Sequence[int], gamma: float) -> Callable[[int], float]:
    marks = sorted(int(m) for m in milestones)
    return lambda step: gamma ** sum(step >= m for m in marks)


def constant(_: int) -> float:
    return 1.0
