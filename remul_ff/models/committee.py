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
from remul_ff.models.common import inference_model, scatter_max
from remul_ff.models.forces import predict


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
        self.members = nn.ModuleList(members)
        self.elements = members[0].elements
        self.training_domain = getattr(members[0], "training_domain", {})

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, molecule_index: torch.Tensor) -> torch.Tensor:
        """``[n]`` mean per-atom energy of the members."""
        return torch.stack([member(positions, atomic_numbers, molecule_index) for member in self.members]).mean(0)

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
        batch = collate([Structure(a.positions, a.numbers) for a in frames[start:start + chunk]], dtype=reference.dtype)
        out.append(max_force_deviation(committee, batch.to(reference.device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
