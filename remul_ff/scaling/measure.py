"""What a training step costs: its FLOPs and its wall time, measured on a :class:`~remul_ff.training.trainer.Trainer`."""

from __future__ import annotations

import copy

import torch

from remul_ff.data.batch import Structure
from remul_ff.training.flops import FlopCounter
from remul_ff.training.trainer import Trainer
from remul_ff.utils.timing import median_seconds


def step_flops(trainer: Trainer, structures: list[Structure]) -> int:
    """FLOPs of one training step on ``structures`` (forward, rotated pass, force and weight gradients).

    Counted with ``torch.utils.flop_counter``'s formulas (matrix products and attention;
    elementwise work is not counted; see :mod:`remul_ff.training.flops`).
    The step is measured, not taken: weights, gradients, GradNorm weights and random
    state are left as they were, so a measured run trains exactly like an unmeasured one.
    """
    gradnorm = None if trainer.gradnorm is None else copy.deepcopy(trainer.gradnorm.state_dict())
    cuda_devices = [trainer.device] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), FlopCounter() as counter:
        trainer.step_loss(structures).backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    if gradnorm is not None:
        trainer.gradnorm.load_state_dict(gradnorm)
    return counter.total


def step_seconds(trainer: Trainer, structures: list[Structure], repeat: int = 5) -> float:
    """Median wall seconds of a training step on ``structures``, after one warm-up step.

    The steps are taken (weights change): time a trainer made for the purpose, after ``setup``.
    """
    return median_seconds(lambda: trainer.step(structures), repeat=repeat, warmup=1)
