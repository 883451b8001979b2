"""Reusable physics checks for energy-only potentials (as e3nn and NequIP ship them).

Each ``*_error`` function returns a number so that a test can assert a bound on it, and so can a
user checking their own model. All take a model that maps ``(positions, atomic_numbers,
molecule_index)`` to per-atom energies, and a :class:`~remul_ff.data.batch.AtomicBatch` on the
model's device and dtype (use float64 for tight bounds).
"""

from __future__ import annotations

import torch
from torch import nn

from remul_ff.data.batch import AtomicBatch
from remul_ff.geometry import random_rotations, rotate_vectors
from remul_ff.models.forces import predict


def finite_difference_force_error(model: nn.Module, batch: AtomicBatch, step: float = 1e-5) -> float:
    """Largest ``|F_autograd - F_central_difference|`` over all atoms and components, in eV/Å."""
    forces = predict(model, batch).forces
    positions = batch.positions.detach()
    numeric = torch.zeros_like(positions)
    for atom in range(positions.shape[0]):
        for axis in range(3):
            shifted = []
            for sign in (1.0, -1.0):
                moved = positions.clone()
                moved[atom, axis] += sign * step
                shifted.append(predict(model, batch.replace(positions=moved), forces=False).energy.sum())
            numeric[atom, axis] = -(shifted[0] - shifted[1]) / (2 * step)
    return float((forces - numeric).abs().max())


def rotation_errors(model: nn.Module, batch: AtomicBatch, n_rotations: int = 4) -> tuple[float, float]:
    """Largest ``|E(Rx) - E(x)|`` (eV) and ``|F(Rx) - R F(x)|`` (eV/Å) over random rotations."""
    base = predict(model, batch)
    energy_err, force_err = 0.0, 0.0
    for _ in range(n_rotations):
        per_atom = random_rotations(batch.n_molecules, batch.dtype, batch.device)[batch.molecule_index]
        rotated = predict(model, batch.replace(positions=rotate_vectors(batch.positions, per_atom)))
        energy_err = max(energy_err, float((rotated.energy - base.energy).abs().max()))
        force_err = max(force_err, float((rotated.forces - rotate_vectors(base.forces, per_atom)).abs().max()))
    return energy_err, force_err


def assert_equivariant(model: nn.Module, batch: AtomicBatch, atol: float = 1e-9, n_rotations: int = 4) -> None:
    """Assert invariant energies and equivariant forces under random rotations (for equivariant models)."""
    energy_err, force_err = rotation_errors(model, batch, n_rotations)
    assert energy_err <= atol and force_err <= atol, f"not equivariant: energy error {energy_err:.3g}, force error {force_err:.3g}"


def translation_error(model: nn.Module, batch: AtomicBatch, shift: float = 3.7) -> tuple[float, float]:
    """Largest energy and force change when every molecule is translated by a different vector."""
    base = predict(model, batch)
    vectors = shift * torch.randn(batch.n_molecules, 3, dtype=batch.dtype, device=batch.device)
    moved = predict(model, batch.replace(positions=batch.positions + vectors[batch.molecule_index]))
    return float((moved.energy - base.energy).abs().max()), float((moved.forces - base.forces).abs().max())


def permutation_error(model: nn.Module, batch: AtomicBatch) -> tuple[float, float]:
    """Largest energy and force change when the atoms inside each molecule are shuffled."""
    base = predict(model, batch)
    keys = batch.molecule_index.to(torch.float64) + torch.rand(batch.n_atoms, dtype=torch.float64, device=batch.device) * 0.5
    order = torch.argsort(keys)  # shuffles within molecules, keeps molecules contiguous
    permuted = batch.replace(
        positions=batch.positions[order], atomic_numbers=batch.atomic_numbers[order], molecule_index=batch.molecule_index[order]
    )
    moved = predict(model, permuted)
    return float((moved.energy - base.energy).abs().max()), float((moved.forces - base.forces[order]).abs().max())


def cutoff_continuity_error(model: nn.Module, batch: AtomicBatch, r_max: float, delta: float = 1e-6) -> tuple[float, float]:
    """Energy and force jumps when the last atom of a molecule crosses the cutoff of the first one.

    The last atom is placed at ``r_max + k delta`` (``k = -2, -1, 1, 2``) from the first along their
    current direction. The smooth change from the atom's other neighbours is removed by subtracting
    the one-sided differences on each side, so what remains is ``O(delta²)`` for a continuous
    model and the size of the jump for a discontinuous one.
    """
    positions = batch.positions.detach().clone()
    first, last = 0, int((batch.molecule_index == batch.molecule_index[0]).sum()) - 1
    direction = positions[last] - positions[first]
    direction = direction / direction.norm()
    values = {}
    for k in (-2, -1, 1, 2):
        placed = positions.clone()
        placed[last] = positions[first] + (r_max + k * delta) * direction
        values[k] = predict(model, batch.replace(positions=placed))

    def jump(get) -> float:
        residual = (get(values[1]) - get(values[-1])) - (get(values[2]) - get(values[1])) - (get(values[-1]) - get(values[-2]))
        return float(residual.abs().max())

    return jump(lambda p: p.energy), jump(lambda p: p.forces)
