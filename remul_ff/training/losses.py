"""REMUL losses: the task loss, the equivariance loss, and the random rigid motions they use.

Conventions: positions and forces are row vectors, so a rotation ``R`` acts as ``x @ R.T``.
Energies are invariant and forces rotate like positions.

Losses are kept as sums of squared errors with their counts, so that a data-parallel run can
divide by the *global* counts and give exactly the update of one process with the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from remul_ff.config import LossConfig
from remul_ff.data.batch import AtomicBatch, concat_batches
from remul_ff.geometry import random_rigid_motion, random_rotations, rotate_batch, rotate_vectors  # noqa: F401 (re-exported)
from remul_ff.models.forces import Prediction, predict


@dataclass
class LossTerms:
    """Sums of squared errors and their counts.

    Attributes:
        energy_sse: Σ over molecules of (ΔE / n_atoms)², eV².
        forces_sse: Σ over force components of ΔF², (eV/Å)².
        n_energy: Number of molecules.
        n_forces: Number of force components.
        direct_sse: Σ over components of the direct forces' ΔF², (eV/Å)² (0 without a direct head).
    """

    energy_sse: torch.Tensor
    forces_sse: torch.Tensor
    n_energy: float
    n_forces: float
    direct_sse: torch.Tensor | float = 0.0

    def total(self, config: LossConfig, n_energy: float | None = None, n_forces: float | None = None) -> torch.Tensor:
        """``w_E · MSE_E + w_F · MSE_F + w_D · MSE_D``, dividing by the given (e.g. global) counts or by the own ones.

        A zero weight leaves its term out of the graph: fitting the direct head alone (energy and force
        weights 0) then skips the double backward through the conservative forces.
        """
        energy = self.energy_sse if config.energy_weight else self.energy_sse.detach()
        forces_sse = self.forces_sse if config.forces_weight else self.forces_sse.detach()
        energy = energy / (n_energy or self.n_energy)
        forces = (config.forces_weight * forces_sse + config.direct_forces_weight * self.direct_sse) / (n_forces or self.n_forces)
        return config.energy_weight * energy + forces


def squared_errors(
    pred_energy: torch.Tensor,
    pred_forces: torch.Tensor,
    energy: torch.Tensor,
    forces: torch.Tensor,
    n_atoms: torch.Tensor,
    weight: torch.Tensor | None = None,
    energy_weight: torch.Tensor | None = None,
    pred_direct: torch.Tensor | None = None,
    direct_target: torch.Tensor | None = None,
) -> LossTerms:
    """Per-atom energy and per-component force squared errors, in the forces' float dtype.

    ``weight`` (``[m]``, optional) scales each molecule's errors; the counts stay unweighted, so a
    weight below 1 makes a molecule count less than a full one. ``energy_weight`` (``[m]``,
    optional) scales the energy errors alone (0: a molecule's forces only). ``pred_direct``
    (optional): direct forces, compared with ``direct_target`` (default: ``forces``).
    """
    per_atom = ((pred_energy - energy) / n_atoms).to(pred_forces.dtype)
    energy_se = per_atom.square()
    if energy_weight is not None:
        energy_se = energy_weight.to(pred_forces.dtype) * energy_se
    if weight is not None:
        energy_se = weight.to(pred_forces.dtype) * energy_se
    forces_sse = weighted_sse(pred_forces - forces, n_atoms, weight)
    direct_target = forces if direct_target is None else direct_target
    direct_sse = 0.0 if pred_direct is None else weighted_sse(pred_direct - direct_target, n_atoms, weight)
    return LossTerms(energy_se.sum(), forces_sse, float(energy.numel()), float(forces.numel()), direct_sse)


def weighted_sse(difference: torch.Tensor, n_atoms: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Σ of the squared components of ``difference`` ``[n, 3]``, each molecule's scaled by its ``weight`` (``[m]``, optional)."""
    se = difference.square().sum(-1)
    if weight is not None:
        se = torch.repeat_interleave(weight.to(se.dtype), n_atoms, output_size=len(se)) * se
    return se.sum()


def task_loss(prediction: Prediction, batch: AtomicBatch, direct_target: str = "labels") -> LossTerms:
    """``L_task``: prediction against the labels of ``batch``, weighted by ``batch.weight`` and ``batch.energy_weight`` if set.

    ``direct_target`` (``loss.direct_forces_target``): the direct forces learn the ``labels`` or the
    prediction's own ``conservative`` forces, detached so that this term trains the head and not the energy.
    """
    conservative = direct_target == "conservative" and prediction.direct_forces is not None
    return squared_errors(
        prediction.energy,
        prediction.forces,
        batch.energy,
        batch.forces,
        batch.atoms_per_molecule,
        batch.weight,
        batch.energy_weight,
        prediction.direct_forces,
        prediction.forces.detach() if conservative else None,
    )


def _split(prediction: Prediction, n_molecules: int, n_atoms: int) -> tuple[Prediction, Prediction]:
    direct = prediction.direct_forces
    first = Prediction(
        prediction.energy[:n_molecules],
        prediction.forces[:n_atoms],
        prediction.atomic_energies[:n_atoms],
        None if direct is None else direct[:n_atoms],
    )
    second = Prediction(
        prediction.energy[n_molecules:],
        prediction.forces[n_atoms:],
        prediction.atomic_energies[n_atoms:],
        None if direct is None else direct[n_atoms:],
    )
    return first, second


def remul_losses(
    model: nn.Module,
    batch: AtomicBatch,
    rotations: torch.Tensor,
    translations: torch.Tensor,
    target: str,
    part: AtomicBatch | None = None,
    direct_target: str = "labels",
) -> tuple[LossTerms, LossTerms]:
    """``(L_task, L_equi)`` from one model call on the batch and its rigidly moved copy.

    Args:
        model: The model being trained.
        batch: Labelled molecules.
        rotations: ``[m, 3, 3]`` one rotation per molecule.
        translations: ``[m, 3]`` one translation per molecule.
        target: ``"label"`` compares the prediction on the moved copy with the moved labels (the
            REMUL paper); ``"prediction"`` compares it with the moved prediction on the original,
            which needs no labels.
        part: The first molecules of ``batch``, as their own batch, when only their moved copy
            enters ``L_equi`` (``loss.equi_fraction`` below 1); ``None``: every molecule's.
        direct_target: What the direct forces learn (:func:`task_loss`).
    """
    part = batch if part is None else part
    moved = rotate_batch(part, rotations[: part.n_molecules], translations[: part.n_molecules])
    both = predict(model, concat_batches(batch, moved), training=True)
    original, on_moved = _split(both, batch.n_molecules, batch.n_atoms)
    if target == "label":
        return task_loss(original, batch, direct_target), task_loss(on_moved, moved, direct_target)
    per_atom = rotations[part.molecule_index]
    rotated = rotate_vectors(original.forces[: part.n_atoms], per_atom)
    equi = squared_errors(
        on_moved.energy, on_moved.forces, original.energy[: part.n_molecules], rotated, part.atoms_per_molecule, part.weight
    )
    if on_moved.direct_forces is not None:  # the direct forces' own target: the moved direct forces
        rotated_direct = rotate_vectors(original.direct_forces[: part.n_atoms], per_atom)
        equi.direct_sse = weighted_sse(on_moved.direct_forces - rotated_direct, part.atoms_per_molecule, part.weight)
    return task_loss(original, batch, direct_target), equi
