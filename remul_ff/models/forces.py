"""The single place where forces are derived: ``F = -dE/dx`` by autograd from an energy-only model.

Every model in :mod:`remul_ff.models` maps ``(positions, atomic_numbers, molecule_index)`` to
per-atom energies; training, evaluation, the ASE calculator and MD all call :func:`predict`.
A model with a direct-force head, seen through
:func:`~remul_ff.models.transformer.with_direct_forces`, returns ``(atomic energies, direct forces)``
instead; :func:`predict` then passes the direct forces on beside the conservative ones.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from torch import nn

from remul_ff.data.batch import AtomicBatch
from remul_ff.data.neighbors import MoleculeLayout
from remul_ff.models.common import scatter_sum


@dataclass
class Prediction:
    """Model output for a batch.

    Attributes:
        energy: ``[m]`` float64 total energy per molecule, eV.
        forces: ``[n, 3]`` forces, eV/Å, in the batch's dtype (``None`` if not requested).
        atomic_energies: ``[n]`` float64 per-atom energies, eV (they sum to ``energy``).
        direct_forces: ``[n, 3]`` the direct-force head's forces, eV/Å (``None`` without one).
    """

    energy: torch.Tensor
    forces: torch.Tensor | None
    atomic_energies: torch.Tensor
    direct_forces: torch.Tensor | None = None


def predict(model: nn.Module, batch: AtomicBatch, forces: bool = True, training: bool = False) -> Prediction:
    """Energies and, optionally, conservative forces of every molecule in ``batch``.

    Args:
        model: An energy-only model, or one that also returns direct forces.
        batch: Molecules to evaluate, on the model's device and dtype.
        forces: Whether to compute ``-dE/dx`` (direct forces alone need no autograd).
        training: Keep the graph of the force computation so that a loss on forces can be
            back-propagated (double backward).
    """
    positions = batch.positions
    if forces and not positions.requires_grad:
        positions = positions.detach().requires_grad_(True)
    with torch.enable_grad() if forces else torch.no_grad():
        atomic, direct = _outputs(energy_model_call(model, positions, batch.atomic_numbers, batch.molecule_index, batch.layout))
        energy = scatter_sum(atomic, batch.molecule_index, batch.n_molecules)
        force = None
        if forces:
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=training)
            force = -grad
    if not training:  # inference callers get plain values, not graph-holding tensors
        energy, atomic = energy.detach(), atomic.detach()
        force = None if force is None else force.detach()
        direct = None if direct is None else direct.detach()
    return Prediction(energy=energy, forces=force, atomic_energies=atomic, direct_forces=direct)


def energy_model_call(model: nn.Module, positions, atomic_numbers, molecule_index, layout: MoleculeLayout | None):
    """``model(positions, atomic_numbers, molecule_index)``, with ``layout=layout`` for a model whose ``forward`` takes it.

    remul-ff's models take the layout; a model written to the plain three-tensor contract still works.
    """
    if layout is None or not takes_layout(type(model)):
        return model(positions, atomic_numbers, molecule_index)
    return model(positions, atomic_numbers, molecule_index, layout=layout)


@functools.cache
def takes_layout(model_class: type) -> bool:
    """Whether ``model_class.forward`` has a ``layout`` parameter (asked once per class)."""
    return "layout" in inspect.signature(model_class.forward).parameters


def _outputs(output: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(atomic energies, direct forces or None)`` from a model's output."""
    return output if isinstance(output, tuple) else (output, None)
