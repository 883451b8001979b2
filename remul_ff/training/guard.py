"""Catching a diverging run: a loss spike rolls training back to its last good epoch with a smaller step.

Why: with a learning rate that suits the first hundred epochs, a longer run can take one bad step
and never recover (rMD17 ethanol, ``max_minutes=85``: loss spikes from epoch 63, then a blow-up
to 8e9 from epoch 221). A spike is an epoch whose mean training loss is not finite or exceeds
``factor`` times the median of the last ``window`` good epochs; the trainer then restores the
weights, the EMA, the optimiser and the scheduler of the last good epoch and scales the learning
rate by ``lr_factor``. After ``max_rollbacks`` the run stops with one sentence instead of spending
its budget on a model that keeps diverging; ``model.pt`` keeps the best model either way.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass
class DivergenceGuard:
    """Spike detection over the epochs' mean training losses.

    Attributes:
        factor: A loss above ``factor`` x the running median is a spike (0 disables the guard).
        window: Good epochs in the running median.
        min_history: Good epochs needed before a finite loss can count as a spike (the first
            epochs fall fast and say nothing about the typical level).
        max_rollbacks: Rollbacks after which training stops.
        lr_factor: Learning-rate scale applied at each rollback.
        history: Mean training losses of the good epochs so far (newest last).
        rollbacks: Rollbacks so far.
    """

    factor: float = 10.0
    window: int = 20
    min_history: int = 3
    max_rollbacks: int = 5
    lr_factor: float = 0.5
    history: list[float] = field(default_factory=list)
    rollbacks: int = 0

    def is_spike(self, loss: float) -> bool:
        """Whether ``loss`` (an epoch's mean training loss) is a spike; a good one joins the history."""
        if self.factor <= 0:
            return False
        if not math.isfinite(loss):
            return True
        recent = self.history[-self.window :]
        if len(recent) >= self.min_history and loss > self.factor * statistics.median(recent):
            return True
        self.history = recent + [loss]
        return False

    def running_median(self) -> float:
        """The median the last loss was compared with (NaN before any good epoch)."""
        return statistics.median(self.history[-self.window :]) if self.history else math.nan

    @property
    def exhausted(self) -> bool:
        """Whether the rollbacks allowed are used up."""
        return self.rollbacks >= self.max_rollbacks

    def state_dict(self) -> dict:
        return {"history": list(self.history), "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.rollbacks = list(state["history"]), int(state["rollbacks"])
