"""REMUL losses: the task loss, the equivariance loss, and the random rigid motions they use.

Conventions: positions and forces are row vectors, so a rotation ``R`` acts as ``x @ R.T``.
Energies are invariant and forces rotate like positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from remul_ff.config import LossConfig
from remul_ff.data.batch import AtomicBatch
from remul_ff.models.forces import Prediction, predict


def random_rotations(n: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``[n, 3, 3]`` Haar-uniform rotation matrices (e3nn's ``o3.rand_matrix``)."""
    return o3.rand_matrix(n, dtype=dtype, device=device)


def rotate_batch(batch: AtomicBatch, rotations: torch.Tensor, translations: torch.Tensor | None = None) -> AtomicBatch:
    """Apply one rigid motion per molecule to positions and (when present) force labels.

    Args:
        batch: Molecules to move.
        rotations: ``[m, 3, 3]`` one rotation per molecule.
        translations: ``[m, 3]`` one translation per molecule, in Å (optional).
    """
    per_atom = rotations[batch.molecule_index]
    positions = torch.einsum("nij,nj->ni", per_atom, batch.positions)
    if translations is not None:
        positions = positions + translations[batch.molecule_index]
    forces = None if batch.forces is None else rotate_vectors(batch.forces, per_atom)
    return batch.replace(positions=positions, forces=forces)


def rotate_vectors(vectors: torch.Tensor, per_atom_rotations: torch.Tensor) -> torch.Tensor:
    """``R_n v_n`` for each row ``n``."""
    return torch.einsum("nij,nj->ni", per_atom_rotations, vectors)


def random_rigid_motion(batch: AtomicBatch, translation_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One random rotation and one Gaussian translation (std ``translation_scale`` Å) per molecule."""
    rotations = random_rotations(batch.n_molecules, batch.dtype, batch.device)
    translations = translation_scale * torch.randn(batch.n_molecules, 3, dtype=batch.dtype, device=batch.device)
    return rotations, translations


@dataclass
class LossTerms:
    """Scalar loss components of one step (tensors that carry gradients)."""

    energy: torch.Tensor
    forces: torch.Tensor

    def total(self, config: LossConfig) -> torch.Tensor:
        """Weighted sum with the configured energy and force weights."""
        return config.energy_weight * self.energy + config.forces_weight * self.forces


def mse_terms(pred_energy: torch.Tensor, pred_forces: torch.Tensor, energy: torch.Tensor, forces: torch.Tensor, n_atoms: torch.Tensor) -> LossTerms:
    """Per-atom energy MSE and per-component force MSE, in the prediction's float dtype."""
    per_atom = ((pred_energy - energy) / n_atoms).to(pred_forces.dtype)
    return LossTerms(energy=per_atom.square().mean(), forces=(pred_forces - forces).square().mean())


def task_loss(prediction: Prediction, batch: AtomicBatch) -> LossTerms:
    """``L_task``: prediction against the labels of ``batch``."""
    return mse_terms(prediction.energy, prediction.forces, batch.energy, batch.forces, batch.atoms_per_molecule)


def equivariance_loss(model: nn.Module, batch: AtomicBatch, prediction: Prediction, target: str) -> LossTerms:
    """``L_equi``: predict on a randomly rotated and translated copy and compare with the moved target.

    Args:
        model: The model being trained.
        batch: The original (unrotated) batch with labels.
        prediction: The model's prediction on ``batch`` (used when ``target == "prediction"``).
        target: ``"label"`` compares with rotated labels (the REMUL paper); ``"prediction"``
            compares with the rotated prediction on the original input, which needs no labels.
    """
    rotations, translations = random_rigid_motion(batch)
    moved = rotate_batch(batch, rotations, translations)
    moved_prediction = predict(model, moved, training=True)
    if target == "label":
        return task_loss(moved_prediction, moved)
    rotated_forces = rotate_vectors(prediction.forces, rotations[batch.molecule_index])
    return mse_terms(moved_prediction.energy, moved_prediction.forces, prediction.energy, rotated_forces, batch.atoms_per_molecule)
