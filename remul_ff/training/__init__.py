"""REMUL training: losses, GradNorm, trainer, checkpoints and evaluation."""

from remul_ff.training.checkpoint import load_model
from remul_ff.training.evaluate import evaluate
from remul_ff.training.trainer import Trainer

__all__ = ["Trainer", "evaluate", "load_model"]
