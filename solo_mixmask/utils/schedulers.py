"""Learning-rate schedules as multiplicative factors of each parameter group's base lr."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence


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


def with_warmup(schedule: Callable[[int], float], steps: int) -> Callable[[int], float]:
    """``schedule`` scaled by a linear warm-up over the first ``steps`` optimizer steps, from
    ``1/steps`` to 1 (W-MSE's 500-iteration warm-up)."""
    if steps <= 0:
        return schedule
    return lambda step: schedule(step) * min(1.0, (step + 1) / steps)


def build_schedule(sc: Any, base_lr: float, total_steps: int,
                   epochs: int) -> Optional[Callable[[int], float]]:
    """The lr factor per optimizer step of a ``scheduler`` config section (None: constant).

    ``total_steps`` counts the steps of the whole run (one per epoch with ``interval: epoch``).
    ``lr_decay_steps`` are epochs, fractions allowed (a decay then falls inside an epoch with
    ``interval: step``); a negative one counts from the end (``-50``: 50 epochs before the
    last). ``warmup_steps`` (iterations) multiplies any schedule by a linear warm-up.
    """
    if sc.name == "none" and not sc.warmup_steps:
        return None
    total = max(1, int(total_steps))
    per_epoch = total / max(1, int(epochs))
    base = max(float(base_lr), 1e-12)
    if sc.name == "step":
        marks = [float(e) if e >= 0 else epochs + float(e) for e in sc.lr_decay_steps]
        schedule = step_decay([int(m * per_epoch) for m in marks if m >= 0], float(sc.gamma))
    elif sc.name == "none":
        schedule = constant
    else:
        warmup = int(math.ceil(float(sc.warmup_epochs) * per_epoch)) \
            if sc.name == "warmup_cosine" else 0
        schedule = warmup_cosine(total, warmup, float(sc.warmup_start_lr) / base,
                                 float(sc.min_lr) / base)
    return with_warmup(schedule, int(sc.warmup_steps))
