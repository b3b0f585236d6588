"""Learning-rate schedule: linear warm-up then step decay (detectron2's ``WarmupMultiStepLR``, official)."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def warmup_multistep(
    max_steps: int,
    warmup_steps: int,
    warmup_factor: float = 1e-3,
    milestones: Sequence[float] = (0.5, 0.875),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """LR multiplier at step ``s``: ``gamma ** (#milestones passed)`` times the linear warm-up factor.

    milestones: fractions of ``max_steps`` (official pretraining: 300k and 525k of 600k = 0.5, 0.875).
    Warm-up goes linearly from ``warmup_factor`` at step 0 to 1 at ``warmup_steps``.
    """
    steps = sorted(round(m * max_steps) for m in milestones)

    def factor(step: int) -> float:
        decay = gamma ** sum(step >= m for m in steps)
        if step < warmup_steps:
            alpha = step / warmup_steps
            return decay * (warmup_factor * (1 - alpha) + alpha)
        return decay

    return factor
