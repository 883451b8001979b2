"""Per-replica collapse detection (Fu et al. 2023, "Forces are not Enough").

A replica has collapsed when its energy, forces or positions are not finite, when its temperature
leaves ``[0, max_temperature]``, or when a bond of the first frame deviates by more than
``bond_tolerance`` Å from its initial length. Bonds are found as in Fu et al.'s code: ASE's
covalent radii plus ASE's default neighbour-list skin of 0.3 Å on each atom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from ase.neighborlist import natural_cutoffs, neighbor_list

from remul_ff.md.state import MDState
from remul_ff.models.common import scatter_sum


# Covalent radii alone miss most bonds of a hot molecule: in a 500 K rMD17 ethanol frame the C-C
# (1.61 Å vs 1.52), C-O and O-H bonds are all longer than the sum of the radii.
BOND_SKIN = 0.3


def molecular_bonds(atoms: Atoms) -> np.ndarray:
    """``[B, 2]`` indices (i < j) of bonded pairs: closer than the sum of covalent radii + 2 x 0.3 Å."""
    i, j = neighbor_list("ij", atoms, np.asarray(natural_cutoffs(atoms)) + BOND_SKIN)
    return np.stack([i, j], 1)[i < j]


@dataclass
class Collapse:
    """Why and when one replica collapsed."""

    replica: int
    step: int
    time_ps: float
    reason: str


class CollapseMonitor:
    """Watches every replica of a batched MD state; bonds are taken from the state it is built with."""

    def __init__(self, state: MDState, max_temperature: float, bond_tolerance: float = 0.5) -> None:
        self.max_temperature = max_temperature
        self.bond_tolerance = bond_tolerance
        self.bonds, self.reference = self._bonds(state)

    @staticmethod
    def _bonds(state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 2]`` global atom indices of bonded pairs (i < j) and ``[B]`` their lengths."""
        offsets = np.concatenate([[0], np.cumsum(state.atoms_per_replica.tolist())])
        pairs = []
        for start, (_, atoms) in zip(offsets, state.replica_atoms()):
            pairs.append(molecular_bonds(atoms) + start)
        bonds = torch.as_tensor(np.concatenate(pairs) if pairs else np.zeros((0, 2)), dtype=torch.long, device=state.positions.device)
        return bonds, _lengths(state.positions, bonds)

    def check(self, state: MDState, step: int, time_ps: float) -> tuple[torch.Tensor, list[Collapse]]:
        """``[m]`` bool of collapsed replicas, and a description of each collapse."""
        reasons = [""] * state.n_replicas
        self._check_finite(state, reasons)
        self._check_temperature(state, reasons)
        self._check_bonds(state, reasons)
        collapsed = torch.tensor([bool(r) for r in reasons], device=state.positions.device)
        events = [Collapse(int(state.replica_id[k]), step, time_ps, r) for k, r in enumerate(reasons) if r]
        return collapsed, events

    def drop(self, atom_keep: torch.Tensor) -> None:
        """Forget the bonds of removed replicas and renumber the rest (see :meth:`MDState.select`)."""
        new_index = torch.cumsum(atom_keep.long(), 0) - 1
        keep = atom_keep[self.bonds[:, 0]]
        self.bonds, self.reference = new_index[self.bonds[keep]], self.reference[keep]

    @staticmethod
    def _check_finite(state: MDState, reasons: list[str]) -> None:
        per_atom_bad = ~torch.isfinite(state.positions).all(-1) | ~torch.isfinite(state.forces).all(-1)
        bad = scatter_sum(per_atom_bad.double(), state.molecule_index, state.n_replicas) > 0
        bad |= ~torch.isfinite(state.energy)
        for k in bad.nonzero().flatten().tolist():
            reasons[k] = "non-finite energy, forces or positions (NaN/inf)"

    def _check_temperature(self, state: MDState, reasons: list[str]) -> None:
        temperature = state.temperature()
        for k in ((temperature > self.max_temperature) | (temperature < 0)).nonzero().flatten().tolist():
            reasons[k] = reasons[k] or f"temperature {float(temperature[k]):.0f} K outside [0, {self.max_temperature:.0f}] K"

    def _check_bonds(self, state: MDState, reasons: list[str]) -> None:
        if self.bonds.shape[0] == 0:
            return
        deviation = (_lengths(state.positions, self.bonds) - self.reference).abs()
        broken = (deviation > self.bond_tolerance).nonzero().flatten().tolist()
        numbers = state.atomic_numbers.tolist()
        for b in broken:
            i, j = self.bonds[b].tolist()
            k = int(state.molecule_index[i])
            if not reasons[k]:
                start = int((state.molecule_index < k).sum())
                reasons[k] = (
                    f"bond {chemical_symbols[numbers[i]]}{i - start}-{chemical_symbols[numbers[j]]}{j - start} deviates "
                    f"{float(deviation[b]):.2f} Å from its initial {float(self.reference[b]):.2f} Å"
                )


def _lengths(positions: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
    return torch.linalg.norm(positions[bonds[:, 1]] - positions[bonds[:, 0]], dim=-1).double()
