"""Learning-rate schedules shared by the training loops (cloning, DDP, symmetrization, EXP-classify)."""
from __future__ import annotations

import math

__all__ = ["cosine_lr"]


def cosine_lr(base: float, step: float, total: float, floor: float = 0.01) -> float:
    """Cosine decay from ``base`` to ``floor · base`` over ``total`` steps (``step`` clipped to it).

    ``lr(t) = base · (floor + (1 − floor) · ½ (1 + cos(π t / total)))``; ``total ≤ 1`` step keeps ``base``
    when ``step`` and ``total`` are integers, a fraction ``step / total`` in ``[0, 1]`` also works.

    Examples
    --------
    >>> cosine_lr(1.0, 0, 10), round(cosine_lr(1.0, 5, 10), 3), cosine_lr(1.0, 10, 10, floor=0.0)
    (1.0, 0.505, 0.0)
    """
    if total <= 0 or (total <= 1 and isinstance(total, int)):
        return base
    t = min(max(step, 0), total) / total
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))
