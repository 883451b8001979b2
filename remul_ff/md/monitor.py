"""Per-replica collapse detection (Fu et al. 2023, "Forces are not Enough").

A replica has collapsed when its energy, forces or positions are not finite, when its temperature
leaves ``[0, max_temperature]``, or when a bond of its first frame deviates by more than
``bond_tolerance`` Å from its reference length (a proton that the reference data shows on either
of two atoms counts by its distance to the nearer one, see :func:`~remul_ff.data.bonds.watched_bonds`).
Bonds are found as in Fu et al.'s code (ASE's
covalent radii plus ASE's default neighbour-list skin of 0.3 Å on each atom, see
:mod:`remul_ff.data.bonds`). The reference length is, as in their code, the mean length of the
bond over a reference data set (``reference_frames``: frames with the same atoms in the same
order); without one, the starting frame's length.

The bonds of all replicas are found at once (:func:`~remul_ff.data.bonds.replica_bonds`, the same
pairs as ASE's neighbour list): the whole set-up for 16384 ethanol replicas takes 0.76 s on one CPU
thread, where ASE's neighbour lists alone, one per replica, took 8.5 s
(``benchmarks/results/monitor_setup.md``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from remul_ff.data.bonds import group_name, replica_bonds, same_atom_positions, watched_bonds
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

    def __init__(self, state: MDState, max_temperature: float, bond_tolerance: float = 0.5, reference_frames: Sequence[Atoms] = ()) -> None:
        self.max_temperature = max_temperature
        self.bond_tolerance = bond_tolerance
        self.bonds, self.groups, self.reference = self._bonds(state, reference_frames)
        warn_unbonded_atoms(self.bonds, state)

    @staticmethod
    def _bonds(state: MDState, reference_frames: Sequence[Atoms]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[P, 2]`` global atom indices of watched pairs (i < j), ``[P]`` their group, ``[G]`` reference lengths."""
        sizes = state.atoms_per_replica.tolist()
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        positions = state.positions.detach().cpu().double().numpy()  # what replica_atoms() gives each replica
        found = replica_bonds(positions, state.atomic_numbers.cpu().numpy(), sizes)  # all replicas at once
        pairs, groups, lengths, cache, n_groups = [], [], [], {}, 0
        for start, (_, atoms), bonds_of_replica in zip(offsets, state.replica_atoms(), found):
            bonds, group, reference = _watched(atoms, bonds_of_replica, reference_frames, cache)
            pairs.append(bonds + start)
            groups.append(group + n_groups)
            lengths.append(reference)
            n_groups += len(reference)
        device = state.positions.device
        as_tensor = lambda parts, dtype, shape: torch.as_tensor(
            np.concatenate(parts) if parts else np.zeros(shape), dtype=dtype, device=device
        )
        return as_tensor(pairs, torch.long, (0, 2)), as_tensor(groups, torch.long, 0), as_tensor(lengths, torch.float64, 0)

    def check(self, state: MDState, step: int, time_ps: float) -> tuple[torch.Tensor, list[Collapse]]:
        """``[m]`` bool of collapsed replicas, and a description of each collapse.

        The tests run on the state's device and cost one host sync when nothing is wrong; only
        replicas that failed are described (the usual case, no failure, reads nothing back).
        """
        non_finite = self._non_finite(state)
        temperature = state.temperature()
        too_hot = (temperature > self.max_temperature) | (temperature < 0)
        deviation = (self._group_lengths(state.positions) - self.reference).abs()
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
        group_keep = torch.zeros_like(self.reference, dtype=torch.bool)
        group_keep[self.groups[keep]] = True
        new_group = torch.cumsum(group_keep.long(), 0) - 1
        self.bonds, self.groups, self.reference = new_index[self.bonds[keep]], new_group[self.groups[keep]], self.reference[group_keep]

    def _group_lengths(self, positions: torch.Tensor) -> torch.Tensor:
        """``[G]`` length of each watched group: its bond's, or the shortest of a fluxional atom's pairs."""
        shortest = torch.full_like(self.reference, torch.inf)
        return shortest.scatter_reduce(0, self.groups, _lengths(positions, self.bonds), "amin")

    @staticmethod
    def _non_finite(state: MDState) -> torch.Tensor:
        """``[m]`` replicas with a NaN or infinite energy, force or position."""
        per_atom_bad = ~torch.isfinite(state.positions).all(-1) | ~torch.isfinite(state.forces).all(-1)
        return (scatter_sum(per_atom_bad.double(), state.molecule_index, state.n_replicas) > 0) | ~torch.isfinite(state.energy)

    def _describe_bonds(
        self, state: MDState, broken: torch.Tensor, deviation: torch.Tensor, reasons: list[str]
    ) -> dict[int, tuple[str, float]]:
        """Fill in the reason of each replica with a broken bond; returns ``{replica: (bond, deviation)}``."""
        found: dict[int, tuple[str, float]] = {}
        numbers = state.atomic_numbers.tolist()
        for g in broken.nonzero().flatten().tolist():
            pairs = self.bonds[self.groups == g]
            k = int(state.molecule_index[pairs[0, 0]])
            if not reasons[k]:
                start = int((state.molecule_index < k).sum())
                name = group_name([chemical_symbols[z] for z in numbers[start:]], pairs.cpu().numpy() - start)
                reasons[k] = bond_reason(name, float(deviation[g]), float(self.reference[g]))
                found[k] = (name, float(deviation[g]))
        return found


def _watched(atoms: Atoms, bonds: np.ndarray, reference_frames: Sequence[Atoms], cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`watched_bonds` of a replica with its ``bonds``, computed once per molecule that the reference
    data hold (then the replicas share it); a molecule without reference frames is judged against its own start."""
    key = (atoms.numbers.tobytes(), bonds.tobytes())
    if key in cache:
        return cache[key]
    result = watched_bonds(atoms, reference_frames, bonds)
    if same_atom_positions(reference_frames, atoms.numbers) is not None:
        cache[key] = result
    return result


def warn_unbonded_atoms(bonds: torch.Tensor, state: MDState) -> None:
    """Warn once when starting structures have atoms bonded to no other atom.

    The monitor watches bonds only, so it cannot see such an atom fly off; and when no atom of a
    molecule is bonded, its coordinates are most likely not in Å (Bohr, nm) or it was never a molecule.
    """
    replica_of_atom = state.molecule_index.cpu().numpy()
    bonded = np.zeros(len(replica_of_atom), dtype=bool)
    bonded[bonds.cpu().numpy().ravel()] = True
    lone = ~bonded & (state.atoms_per_replica.cpu().numpy()[replica_of_atom] > 1)  # a one-atom replica has no bonds to watch
    if not lone.any():
        return
    replicas = np.unique(replica_of_atom[lone])
    first_atom = int(np.searchsorted(replica_of_atom, replicas[0]))
    atoms = np.flatnonzero(lone & (replica_of_atom == replicas[0]))
    symbols = [chemical_symbols[z] for z in state.atomic_numbers.cpu().numpy()[atoms]]
    listed = ", ".join(f"{a - first_atom} ({s})" for a, s in zip(atoms[:6], symbols)) + (", ..." if len(atoms) > 6 else "")
    warnings.warn(
        f"remul-ff: in {len(replicas)} of {state.n_replicas} starting structures some atoms are bonded to no other "
        f"atom (replica {int(state.replica_id[replicas[0]])}: atoms {listed}), so the collapse monitor cannot see "
        "them break away; check that the coordinates are in Å.",
        stacklevel=3,
    )


def bond_reason(name: str, deviation: float, reference: float) -> str:
    """The sentence recorded for a broken bond."""
    return f"bond {name} deviates {deviation:.2f} Å from its reference {reference:.2f} Å"


def _lengths(positions: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
    return torch.linalg.norm(positions[bonds[:, 1]] - positions[bonds[:, 0]], dim=-1).double()
