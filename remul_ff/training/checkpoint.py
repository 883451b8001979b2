"""Training checkpoints (``checkpoint.pt``): the model-file format of :mod:`remul_ff.models.files` plus the
trainer state, what a trainer writes into one and takes back from it, and the weights of ``train.init_from``.

Model files themselves are read and written by :mod:`remul_ff.models.files`; the names are
re-exported here for code written against the old location.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from remul_ff.errors import ConfigError
from remul_ff.models.files import (  # noqa: F401 (re-exported)
    CHECKPOINT_FILE_KIND,
    FORMAT_VERSION,
    MODEL_FILE_KIND,
    load_file,
    load_model,
    model_from_payload,
    model_payload,
    save_file,
)

CHECKPOINT_KIND = CHECKPOINT_FILE_KIND

if TYPE_CHECKING:
    from remul_ff.training.trainer import Trainer


def trainer_checkpoint(trainer: Trainer) -> dict:
    """Everything ``--resume`` needs: the training state plus progress, random state and the data's facts."""
    return {
        "kind": CHECKPOINT_KIND,
        "format_version": FORMAT_VERSION,
        "config": trainer.config.to_dict(),
        "epoch": trainer.epoch,
        "best": trainer.best,
        "bad_epochs": trainer.bad_epochs,
        "wall": trainer.wall,
        "budget_extension_s": trainer.budget_extension_s,
        **training_state(trainer),
        "guard": trainer.guard.state_dict(),
        "stage": trainer.stage,
        "rng_torch": torch.get_rng_state(),
        "rng_shuffle": trainer.shuffle.get_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "e0s": trainer.data.e0s,
        "elements": trainer.data.elements,
    }


def training_state(trainer: Trainer) -> dict:
    """What a rollback restores: weights, EMA, optimiser, schedule and GradNorm's weights (live references)."""
    return {
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "gradnorm": None if trainer.gradnorm is None else trainer.gradnorm.state_dict(),
    }


def load_training_state(trainer: Trainer, state: dict) -> None:
    """Put a :func:`training_state` back."""
    trainer.model.load_state_dict(state["model"])
    trainer.ema.load_state_dict(state["ema"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.gradnorm is not None and state["gradnorm"] is not None:
        trainer.gradnorm.load_state_dict(state["gradnorm"])


def restore_progress(trainer: Trainer, state: dict) -> None:
    """Put a checkpoint's training state, guard, stage, random state and progress back into ``trainer``."""
    load_training_state(trainer, state)
    if "guard" in state:  # checkpoints written before the guard start it afresh
        trainer.guard.load_state_dict(state["guard"])
    trainer.stage = state.get("stage", 1)
    torch.set_rng_state(state["rng_torch"])
    trainer.shuffle.set_state(state["rng_shuffle"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    trainer.epoch, trainer.best, trainer.bad_epochs, trainer.wall = state["epoch"], state["best"], state["bad_epochs"], state["wall"]
    trainer.budget_extension_s = state.get("budget_extension_s", 0.0)


def copy_weights(start: nn.Module, model: nn.Module, path: str, kind: str, new_head: bool = False, data_reference: bool = False) -> None:
    """Copy the weights of ``start`` (the model file ``path``, ``train.init_from``) into the new ``model``.

    ``new_head`` (``train.trainable: direct_forces_head``): ``model``'s direct-force head may differ from
    ``start``'s, or ``start`` may have none; such a head keeps its fresh weights. ``data_reference``
    (``train.init_energy_reference: data``): ``model`` keeps its own E0s and per-element shift, which
    its data set; the rest (the scale too: forces of two levels of theory have similar size) is ``start``'s.
    """
    same = type(start) is type(model) and start.elements.symbols() == model.elements.symbols()
    state, target = start.state_dict(), model.state_dict()
    if new_head and _shapes(_head(state)) != _shapes(_head(target)):
        state = {**{k: v for k, v in state.items() if k not in _head(state)}, **_head(target)}
    if not same or _shapes(state) != _shapes(target):
        raise ConfigError(
            f"train.init_from {path} is a {type(start).__name__} for {', '.join(start.elements.symbols())}, which does not "
            f"match this config's {kind} for {', '.join(model.elements.symbols())}; "
            "use the same model section and data elements, or drop init_from."
        )
    if data_reference:
        state = {**state, **{k: v for k, v in target.items() if k in ("head.shift", "head._extra_state")}}
    model.load_state_dict(state)


def _head(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("force_head.")}


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in state.items()}
