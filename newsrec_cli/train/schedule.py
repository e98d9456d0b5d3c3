"""Learning-rate schedules: linear warm-up, then cosine decay, plateau halving, or constant."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

MIN_RATIO = 0.1  # cosine ends at 10% of the peak rather than 0: the last steps still learn
PLATEAU_FACTOR = 0.5
PLATEAU_MIN_DELTA = 1e-4


def lr_at(
    step: int,
    *,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    schedule: Literal["cosine", "plateau", "constant"],
) -> float:
    """The learning rate of step `step` (0-based), before any plateau factor."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule != "cosine":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (MIN_RATIO + (1 - MIN_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class Plateau:
    """Halves the learning rate after an epoch without a better validation AUC."""

    factor: float = 1.0
    best: float = -math.inf

    def update(self, auc: float) -> None:
        if auc > self.best + PLATEAU_MIN_DELTA:
            self.best = auc
        else:
            self.factor *= PLATEAU_FACTOR

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.factor, self.best = float(state["factor"]), float(state["best"])
