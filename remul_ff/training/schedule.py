"""The learning-rate schedule of a training run: cosine over the run's progress, on a plateau, or
constant; its step per epoch and the cut a rollback makes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from remul_ff.config import TrainConfig


def make_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, progress: Callable[[int], float]):
    """The scheduler ``train.scheduler`` names; ``progress(epoch)`` is the run's progress in [0, 1]
    (epochs or time budget, whichever is further), which the cosine schedule follows."""
    if train.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=max(train.patience // 4, 1))
    if train.scheduler == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    ratio = train.min_lr_ratio
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress(epoch))))


def step_scheduler(scheduler, val_loss: float) -> None:
    """One epoch's step (the plateau schedule reads the validation loss)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


def scale_lr(optimizer: torch.optim.Optimizer, scheduler, scale: float) -> None:
    """Scale the current learning rate (and its schedule's peak) by ``scale``."""
    for group in optimizer.param_groups:
        group["lr"] *= scale
    if hasattr(scheduler, "base_lrs"):  # LambdaLR; ReduceLROnPlateau works from the groups' lr
        scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
