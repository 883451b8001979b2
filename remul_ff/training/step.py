"""What one training step computes: this rank's share of a global batch and its REMUL, augmentation
or plain task loss. The :class:`~remul_ff.training.trainer.Trainer` weights and applies it."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from remul_ff.config import LossConfig
from remul_ff.data.batch import AtomicBatch, Structure, device_batch
from remul_ff.models import predict
from remul_ff.models.common import ACCELERATOR_ALL_PAIRS_MAX_ATOMS, with_fixed_pairs
from remul_ff.models.transformer import has_direct_forces, with_direct_forces
from remul_ff.training import distributed
from remul_ff.training.losses import random_rigid_motion, remul_losses, rotate_batch, task_loss


@contextlib.contextmanager
def keeping_thread_count() -> Iterator[None]:
    """Restore torch's CPU thread count after the body: ``train.num_threads`` fixes a training
    budget's threads, and what runs after the training (MD, timings) keeps the caller's."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class LocalBatch:
    """This rank's molecules of a global batch, on the device.

    Attributes:
        batch: The molecules (the first one with weight 0 on a rank that got none).
        rows: Their rows in per-molecule draws made for the global batch.
        weight: 1, or 0 for the stand-in molecule.
        n_global: Molecules in the global batch.
        n_force_components: Force components in the global batch.
        equi: This rank's molecules whose moved copy enters ``L_equi``, when that is not all of
            them (``loss.equi_fraction`` below 1): the first ones of ``batch``.
        equi_counts: Molecules and force components of the global batch's share in ``L_equi``.
    """

    batch: AtomicBatch
    rows: slice
    weight: float
    n_global: int
    n_force_components: float
    equi: AtomicBatch | None = None
    equi_counts: tuple[float, float] | None = None


@dataclass
class EpochStats:
    """Training-loss sums of one epoch (summed over ranks before logging).

    The sums stay on the losses' device (float64) and are read once per epoch: a ``float()`` per
    step would wait for the GPU at every step.
    """

    sums: torch.Tensor | None = None
    steps: int = 0

    def add(self, loss: torch.Tensor, task: torch.Tensor, equi: torch.Tensor) -> None:
        values = torch.stack([loss, task, equi]).double()
        self.sums = values if self.sums is None else self.sums + values
        self.steps += 1

    def means(self, ctx: distributed.DistributedContext) -> dict[str, float]:
        totals = ctx.all_reduce(torch.zeros(3, dtype=torch.float64) if self.sums is None else self.sums.cpu())
        n = max(self.steps, 1)
        return {"train_loss": float(totals[0]) / n, "train_task": float(totals[1]) / n, "train_equi": float(totals[2]) / n}


def trainable_parameters(model: nn.Module, which: str) -> list[nn.Parameter]:
    """The parameters the optimiser updates (``train.trainable``); with ``direct_forces_head`` every other
    parameter is frozen, so the energies and conservative forces stay those of ``train.init_from``."""
    if which == "all":
        return list(model.parameters())
    model.requires_grad_(False)
    return list(model.force_head.requires_grad_(True).parameters())


def training_views(model: nn.Module, fixed_pairs: bool, ctx: distributed.DistributedContext, device) -> tuple[nn.Module, nn.Module]:
    """``(training model, forward model)``: the model as a training step calls it.

    On an accelerator small molecules train over every same-molecule pair (``fixed_pairs``; a view
    sharing the parameters): the same energies as pairs within r_max, whose distance filter is a host
    sync. A direct-force head trains beside the energy: the forward model returns both. Several
    processes wrap it in DistributedDataParallel.
    """
    training_model = with_fixed_pairs(model, ACCELERATOR_ALL_PAIRS_MAX_ATOMS) if fixed_pairs else model
    forward_model = with_direct_forces(training_model) if has_direct_forces(model) else training_model
    if ctx.enabled:
        ids = [device.index] if device.type == "cuda" else None
        # Double backward (force training) leaves some gradients with transposed strides; DDP
        # copies them into its buckets correctly and only warns about speed.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        forward_model = DistributedDataParallel(forward_model, device_ids=ids)
    return training_model, forward_model


def local_batch(
    structures: list[Structure], ctx: distributed.DistributedContext, device, dtype, fixed_pairs: bool, loss: LossConfig
) -> LocalBatch:
    """This rank's share of the global batch, on the device, with what the step needs to know about it.

    A last global batch smaller than the number of ranks leaves some ranks without molecules;
    they run the first molecule with weight 0, because DDP needs every rank to join the
    gradient all-reduce. The result stays that of one process (no padding bias).
    """
    rows = slice(ctx.rank, None, ctx.world_size)
    mine, rows, weight = (structures[rows], rows, 1.0) if structures[rows] else (structures[:1], slice(0, 1), 0.0)
    batch = device_batch(mine, device, dtype, every_pair=fixed_pairs)
    local = LocalBatch(batch, rows, weight, len(structures), 3.0 * sum(len(s) for s in structures))
    if loss.mode == "remul" and loss.equi_fraction < 1:
        # The global batch's first k molecules (at least one per rank that has molecules).
        k = min(len(structures), max(math.ceil(loss.equi_fraction * len(structures)), ctx.world_size))
        local_k = max(len(range(ctx.rank, k, ctx.world_size)), 1)
        local.equi = device_batch(mine[:local_k], device, dtype, every_pair=fixed_pairs)
        local.equi_counts = (float(k), 3.0 * sum(len(s) for s in structures[:k]))
    return local


def batch_losses(model: nn.Module, local: LocalBatch, loss: LossConfig, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_task, L_equi)`` of this rank's share, each divided by the global counts (``L_equi`` is 0
    unless ``loss.mode`` is ``remul``; ``augment`` moves the batch rigidly first)."""
    batch, rows, weight = local.batch, local.rows, local.weight
    counts = (float(local.n_global), local.n_force_components)
    if loss.mode != "none":  # one draw for the whole global batch, identical on every rank
        rotations, translations = random_rigid_motion(local.n_global, dtype, device, reflections=loss.reflections)
    if loss.mode == "augment":
        batch = rotate_batch(batch, rotations[rows], translations[rows])
    if loss.mode != "remul":
        task = weight * task_loss(predict(model, batch, training=True), batch, loss.direct_forces_target).total(loss, *counts)
        return task, torch.zeros_like(task)
    task_terms, equi_terms = remul_losses(
        model, batch, rotations[rows], translations[rows], loss.target, local.equi, loss.direct_forces_target
    )
    return weight * task_terms.total(loss, *counts), weight * equi_terms.total(loss, *(local.equi_counts or counts))
