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

import copy
import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from remul_ff.training.checkpoint import load_training_state, training_state
from remul_ff.training.schedule import scale_lr

if TYPE_CHECKING:
    from remul_ff.training.trainer import Trainer


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


def roll_back_on_spike(trainer: Trainer, train_loss: float) -> str | None:
    """Keep this epoch as the last good one, or, if its loss spiked, restore the last good one with the
    learning rate scaled by ``lr_factor``; returns what happened in one sentence (``None``: no spike)."""
    guard = trainer.guard
    if not guard.is_spike(train_loss):
        trainer.good_state = copy.deepcopy(training_state(trainer))
        return None
    median = guard.running_median()
    guard.rollbacks += 1
    load_training_state(trainer, copy.deepcopy(trainer.good_state))
    scale_lr(trainer.optimizer, trainer.scheduler, guard.lr_factor)
    trainer.good_state = copy.deepcopy(training_state(trainer))  # a second spike returns here, step cut again
    return (
        f"training loss {train_loss:.3g} spiked above {guard.factor:g}x its running "
        f"median {median:.3g}; rolled back to the last good epoch with the learning rate scaled by "
        f"{guard.lr_factor:g} (rollback {guard.rollbacks}/{guard.max_rollbacks})"
    )


def stop_reason(guard: DivergenceGuard, bad_epochs: int, patience: int, wall: float, budget_s: float) -> str | None:
    """Why training stops after this epoch (``None``: it goes on)."""
    if guard.exhausted:
        return (
            f"stopping: the training loss diverged {guard.rollbacks} time(s) although the learning rate was "
            f"cut at each; model.pt keeps the best model so far; train again with a lower train.lr."
        )
    if bad_epochs >= patience:
        return f"early stopping: no validation improvement for {patience} epochs"
    if wall >= budget_s:
        return f"stopping: the time budget of {budget_s / 60:g} minutes is used up"
    return None
