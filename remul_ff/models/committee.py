"""Committees: several independently trained models used as one, with their disagreement as uncertainty.

The committee's energy is the members' mean, so its forces (``-dE/dx`` by :func:`predict`) are the
mean of the members' forces and MD with a committee is MD on the mean potential. Where the members
disagree, none of them is to be trusted: the largest force deviation over the atoms of a molecule
(DP-GEN's ``max_devi_f``) rises when a trajectory leaves the training data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from torch import nn

from remul_ff.data.batch import AtomicBatch, Structure, collate
from remul_ff.errors import CheckpointError
from remul_ff.models.common import AtomicEnergyHead, ElementTable, inference_model, scatter_max
from remul_ff.models.forces import energy_model_call, predict

E0_TOLERANCE_EV = 1.0
"""Largest difference of two members' isolated-atom energies (per element) a committee accepts. Models
trained on the same level of theory agree to far less; different levels (xTB and DFT, two functionals)
differ by eV to hundreds of eV, and the mean of such models is no potential."""


def check_committee(members: Sequence[nn.Module], names: Sequence[str] | None = None) -> None:
    """Raise :class:`~remul_ff.errors.CheckpointError` unless the members know the same elements with
    the same isolated-atom energies (``names``: how to call them in the message, e.g. their files)."""
    names = list(names) if names is not None else [f"model {k + 1}" for k in range(len(members))]
    first = _elements_and_e0s(members[0])
    for name, member in zip(names[1:], members[1:]):
        other = _elements_and_e0s(member)
        if set(other) != set(first):
            raise CheckpointError(
                f"{names[0]} and {name} cannot form a committee: they know different elements "
                f"({_symbols(first)} and {_symbols(other)}); use models trained on the same data."
            )
        z = max(first, key=lambda z: abs(first[z] - other[z]))
        if abs(first[z] - other[z]) > E0_TOLERANCE_EV:
            raise CheckpointError(
                f"{names[0]} and {name} cannot form a committee: their isolated-atom energies of "
                f"{_symbols([z])} differ by {abs(first[z] - other[z]):.3g} eV, so they were trained on "
                "different levels of theory and their mean is no potential; use models trained on the same labels."
            )


def _elements_and_e0s(member: nn.Module) -> dict[int, float]:
    table = next(m for m in member.modules() if isinstance(m, ElementTable))
    head = next(m for m in member.modules() if isinstance(m, AtomicEnergyHead))
    return dict(zip(table.elements.tolist(), head.e0s))


def _symbols(numbers) -> str:
    from ase.data import chemical_symbols

    return ", ".join(chemical_symbols[z] for z in sorted(numbers))


class Committee(nn.Module):
    """Energy-only model whose per-atom energies are the mean of its members'.

    Args:
        members: Energy-only models (same elements); the first one's ``elements`` and
            ``training_domain`` speak for the committee.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("a committee needs at least two models.")
        check_committee(members)
        self.members = nn.ModuleList(members)
        self.elements = members[0].elements
        self.training_domain = getattr(members[0], "training_domain", {})

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, molecule_index: torch.Tensor, layout=None) -> torch.Tensor:
        """``[n]`` mean per-atom energy of the members (``layout``: the batch's, if known)."""
        energies = [energy_model_call(member, positions, atomic_numbers, molecule_index, layout) for member in self.members]
        return torch.stack(energies).mean(0)

    def for_inference(self) -> Committee:
        """The committee of its members' inference copies (:func:`~remul_ff.models.common.inference_model`)."""
        return Committee([inference_model(member) for member in self.members])


def max_force_deviation(committee: Committee, batch: AtomicBatch) -> torch.Tensor:
    """``[m]`` largest force deviation over each molecule's atoms, eV/Å.

    Per atom the deviation is ``sqrt(mean_k |F_k - <F>|²)`` over the members ``k`` (the root of the
    summed variances of the three components), as DP-GEN and MACE's committees define it.
    """
    forces = torch.stack([predict(member, batch).forces for member in committee.members]).double()
    per_atom = ((forces - forces.mean(0)) ** 2).sum(-1).mean(0).sqrt()
    return scatter_max(per_atom, batch.molecule_index, batch.n_molecules)


def frame_deviations(committee: Committee, frames: Sequence[Atoms], chunk: int = 256) -> np.ndarray:
    """``[frames]`` :func:`max_force_deviation` of each of ``frames`` (e.g. one replica's saved
    trajectory), evaluated ``chunk`` molecules at a time on the committee's device and dtype."""
    reference = next(committee.parameters())
    out = []
    for start in range(0, len(frames), chunk):
        batch = collate([Structure(a.positions, a.numbers) for a in frames[start : start + chunk]], dtype=reference.dtype)
        out.append(max_force_deviation(committee, batch.to(reference.device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
