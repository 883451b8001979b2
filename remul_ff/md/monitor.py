"""Per-replica collapse detection (Fu et al. 2023, "Forces are not Enough").

A replica has collapsed when its energy, forces or positions are not finite, when its temperature
leaves ``[0, max_temperature]``, or when a bond of its first frame deviates by more than
``bond_tolerance`` Å from its reference length. Bonds are found as in Fu et al.'s code (ASE's
covalent radii plus ASE's default neighbour-list skin of 0.3 Å on each atom, see
:mod:`remul_ff.data.bonds`). The reference length is, as in their code, the mean length of the
bond over a reference data set (``reference_frames``: frames with the same atoms in the same
order); without one, the starting frame's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from remul_ff.data.bonds import BOND_SKIN, bond_lengths, mean_bond_lengths, molecular_bonds  # noqa: F401 (re-exported)
from remul_ff.md.state import MDState
from remul_ff.models.common import scatter_sum


@dataclass
class Collapse:
    """Why and when one replica collapsed.

    Attributes:
        replica: Replica number (its position in the starting structures).
        step: MD step of the check that found it.
        time_ps: Simulated time of that step, ps.
        reason: One sentence for people.
        bond: The broken bond as ``"C1-H5"`` (atom indices within the molecule), or ``""``.
        deviation: How far that bond was from its reference length, Å (0 for other reasons).
    """

    replica: int
    step: int
    time_ps: float
    reason: str
    bond: str = ""
    deviation: float = 0.0


class CollapseMonitor:
    """Watches every replica of a batched MD state; bonds are taken from the state it is built with."""

    def __init__(self, state: MDState, max_temperature: float, bond_tolerance: float = 0.5,
                 reference_frames: Sequence[Atoms] = ()) -> None:
        self.max_temperature = max_temperature
        self.bond_tolerance = bond_tolerance
        self.bonds, self.reference = self._bonds(state, reference_frames)

    @staticmethod
    def _bonds(state: MDState, reference_frames: Sequence[Atoms]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 2]`` global atom indices of bonded pairs (i < j) and ``[B]`` their reference lengths."""
        offsets = np.concatenate([[0], np.cumsum(state.atoms_per_replica.tolist())])
        pairs, lengths, means = [], [], {}
        for start, (_, atoms) in zip(offsets, state.replica_atoms()):
            bonds = molecular_bonds(atoms)
            key = (atoms.numbers.tobytes(), bonds.tobytes())  # replicas of one molecule share the mean: compute it once
            if key not in means:
                means[key] = mean_bond_lengths(reference_frames, bonds, atoms.numbers)
            mean = means[key]
            pairs.append(bonds + start)
            lengths.append(bond_lengths(atoms.positions, bonds) if mean is None else mean)
        device = state.positions.device
        bonds = torch.as_tensor(np.concatenate(pairs) if pairs else np.zeros((0, 2)), dtype=torch.long, device=device)
        reference = torch.as_tensor(np.concatenate(lengths) if lengths else np.zeros(0), dtype=torch.float64, device=device)
        return bonds, reference

    def check(self, state: MDState, step: int, time_ps: float) -> tuple[torch.Tensor, list[Collapse]]:
        """``[m]`` bool of collapsed replicas, and a description of each collapse.

        The tests run on the state's device and cost one host sync when nothing is wrong; only
        replicas that failed are described (the usual case, no failure, reads nothing back).
        """
        non_finite = self._non_finite(state)
        temperature = state.temperature()
        too_hot = (temperature > self.max_temperature) | (temperature < 0)
        deviation = (_lengths(state.positions, self.bonds) - self.reference).abs()
        broken = deviation > self.bond_tolerance
        if not bool(non_finite.any() | too_hot.any() | broken.any()):
            return torch.zeros_like(non_finite), []
        reasons = [""] * state.n_replicas
        for k in non_finite.nonzero().flatten().tolist():
            reasons[k] = "non-finite energy, forces or positions (NaN/inf)"
        for k in too_hot.nonzero().flatten().tolist():
            reasons[k] = reasons[k] or f"temperature {float(temperature[k]):.0f} K outside [0, {self.max_temperature:.0f}] K"
        bonds = self._describe_bonds(state, broken, deviation, reasons)
        collapsed = torch.tensor([bool(r) for r in reasons], device=state.positions.device)
        events = [Collapse(int(state.replica_id[k]), step, time_ps, r, *bonds.get(k, ("", 0.0))) for k, r in enumerate(reasons) if r]
        return collapsed, events

    def drop(self, atom_keep: torch.Tensor) -> None:
        """Forget the bonds of removed replicas and renumber the rest (see :meth:`MDState.select`)."""
        new_index = torch.cumsum(atom_keep.long(), 0) - 1
        keep = atom_keep[self.bonds[:, 0]]
        self.bonds, self.reference = new_index[self.bonds[keep]], self.reference[keep]

    @staticmethod
    def _non_finite(state: MDState) -> torch.Tensor:
        """``[m]`` replicas with a NaN or infinite energy, force or position."""
        per_atom_bad = ~torch.isfinite(state.positions).all(-1) | ~torch.isfinite(state.forces).all(-1)
        return (scatter_sum(per_atom_bad.double(), state.molecule_index, state.n_replicas) > 0) | ~torch.isfinite(state.energy)

    def _describe_bonds(self, state: MDState, broken: torch.Tensor, deviation: torch.Tensor,
                        reasons: list[str]) -> dict[int, tuple[str, float]]:
        """Fill in the reason of each replica with a broken bond; returns ``{replica: (bond, deviation)}``."""
        found: dict[int, tuple[str, float]] = {}
        numbers = state.atomic_numbers.tolist()
        for b in broken.nonzero().flatten().tolist():
            i, j = self.bonds[b].tolist()
            k = int(state.molecule_index[i])
            if not reasons[k]:
                start = int((state.molecule_index < k).sum())
                name = bond_name(chemical_symbols[numbers[i]], i - start, chemical_symbols[numbers[j]], j - start)
                reasons[k] = bond_reason(name, float(deviation[b]), float(self.reference[b]))
                found[k] = (name, float(deviation[b]))
        return found


def bond_name(symbol_i: str, i: int, symbol_j: str, j: int) -> str:
    """``"C1-H5"``: a bond named by its atoms' symbols and indices within the molecule."""
    return f"{symbol_i}{i}-{symbol_j}{j}"


def bond_reason(name: str, deviation: float, reference: float) -> str:
    """The sentence recorded for a broken bond."""
    return f"bond {name} deviates {deviation:.2f} Å from its reference {reference:.2f} Å"


def _lengths(positions: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
    return torch.linalg.norm(positions[bonds[:, 1]] - positions[bonds[:, 0]], dim=-1).double()
