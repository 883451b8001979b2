"""Covalent bonds of a molecule and their reference lengths, as Fu et al. (2023, MDsim) define them.

Bonds are pairs closer than the sum of ASE's covalent radii plus ASE's default neighbour-list skin
of 0.3 Å on each atom (``NeighborList(natural_cutoffs(atoms))``), found on one frame. The reference
length of a bond is its **mean** over the frames of the reference data set, not its length in
the starting frame: a replica that starts from a stretched frame is then not half-way to the
0.5 Å collapse criterion already.

One extension, for molecules Fu et al. did not simulate: a bond that the reference data itself
forms and breaks (its length varies by more than ``FLUXIONAL_STD`` over the data, as the enol
proton of acetylacetone does, sitting on either oxygen in about half of the frames) is not a
collapse when it breaks. Its lighter atom is watched instead by its distance to the *nearest* of
its partners in the data (the two oxygens), against the mean of that distance over the data: the
proton may move between the oxygens, but not leave both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.neighborlist import natural_cutoffs, neighbor_list

from remul_ff.geometry import ALL_PAIRS_MAX_ATOMS

# Covalent radii alone miss most bonds of a hot molecule: in a 500 K rMD17 ethanol frame the C-C
# (1.61 Å vs 1.52), C-O and O-H bonds are all longer than the sum of the radii.
BOND_SKIN = 0.3
# Covalent bonds of the shared data sets vary by 0.03-0.05 Å (standard deviation over the frames);
# acetylacetone's O-H, with the proton on either oxygen, by 0.36 Å.
FLUXIONAL_STD = 0.1
# replica_bonds compares every atom pair of a molecule (n^2 / 2) up to ALL_PAIRS_MAX_ATOMS, ASE's cell list above it.
PAIRS_PER_CHUNK = 1 << 21  # ~150 MB of float64 work arrays at a time


def molecular_bonds(atoms: Atoms) -> np.ndarray:
    """``[B, 2]`` indices (i < j) of bonded pairs: closer than the sum of covalent radii + 2 x 0.3 Å."""
    i, j = neighbor_list("ij", atoms, np.asarray(natural_cutoffs(atoms)) + BOND_SKIN)
    return np.stack([i, j], 1)[i < j]


def replica_bonds(positions: np.ndarray, numbers: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """:func:`molecular_bonds` of every replica of a batch, replicas of one size at once.

    Args:
        positions: ``[N, 3]`` float64 positions of all replicas, one after the other.
        numbers: ``[N]`` atomic numbers.
        sizes: Atoms per replica.

    Returns:
        Per replica, ``[B, 2]`` bonded pairs (i < j, indices within the replica): the pairs that
        :func:`molecular_bonds` finds, by the same float64 comparison, in (i, j) order (ASE's
        neighbour list orders them by its cell list).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    starts = np.cumsum(sizes) - sizes
    bonds: list[np.ndarray] = [np.zeros((0, 2), dtype=np.int64)] * len(sizes)
    for n in np.unique(sizes):
        members = np.flatnonzero(sizes == n)
        if n > ALL_PAIRS_MAX_ATOMS:  # a cell list is linear in n
            for r in members:
                atoms = Atoms(numbers=numbers[starts[r] : starts[r] + n], positions=positions[starts[r] : starts[r] + n])
                found = molecular_bonds(atoms)
                bonds[r] = found[np.lexsort((found[:, 1], found[:, 0]))]
            continue
        i, j = np.triu_indices(n, 1)
        for chunk in np.array_split(members, math.ceil(len(members) * max(len(i), 1) / PAIRS_PER_CHUNK)):
            bonded = _bonded_pairs(positions, numbers, starts[chunk][:, None] + np.arange(n), i, j)
            for r, mask in zip(chunk.tolist(), bonded):
                bonds[r] = np.stack([i[mask], j[mask]], 1)
    return bonds


def _bonded_pairs(positions: np.ndarray, numbers: np.ndarray, atoms: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``[m, K]``: is pair ``(i[k], j[k])`` of each of the ``m`` replicas (rows of global ``atoms`` indices) a bond?

    The same arithmetic as ASE's neighbour list with ``natural_cutoffs + BOND_SKIN`` radii: the length
    of ``p_j - p_i`` below the sum of the two radii.
    """
    p, radii = positions[atoms], covalent_radii[numbers[atoms]] + BOND_SKIN
    difference = p[:, j] - p[:, i]
    return np.sqrt(np.sum(difference * difference, axis=-1)) < radii[:, i] + radii[:, j]


def bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Lengths (Å) of ``bonds`` ``[B, 2]`` in one frame ``[n, 3]`` or many ``[T, n, 3]``."""
    positions = np.asarray(positions, dtype=np.float64)
    return np.linalg.norm(positions[..., bonds[:, 1], :] - positions[..., bonds[:, 0], :], axis=-1)


def mean_bond_lengths(frames: Sequence[Atoms], bonds: np.ndarray, numbers: np.ndarray) -> np.ndarray | None:
    """Mean length of each bond over the ``frames`` with the same atoms (same ``numbers``, same order).

    Returns ``None`` when no frame has these atoms, so callers can fall back to the starting frame.
    """
    same = same_atom_positions(frames, numbers)
    return None if same is None else bond_lengths(same, bonds).mean(axis=0)


def same_atom_positions(frames: Sequence[Atoms], numbers: np.ndarray) -> np.ndarray | None:
    """``[T, n, 3]`` positions of the ``frames`` with these atoms in this order, or ``None``."""
    same = [f.positions for f in frames if len(f) == len(numbers) and np.array_equal(f.numbers, numbers)]
    return np.stack(same) if same else None


def watched_bonds(
    atoms: Atoms, reference_frames: Sequence[Atoms] = (), bonds: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the collapse criterion watches: atom pairs, grouped, and each group's reference length.

    A group is one bond (the usual case) or a fluxional atom's pairs with its partners, whose
    *shortest* length is compared with the reference (see the module docstring).

    ``bonds``: :func:`molecular_bonds` of ``atoms`` when the caller has them already.

    Returns:
        ``pairs [P, 2]`` (i < j), ``group [P]`` (0 .. G-1, each group's pairs contiguous) and
        ``reference [G]`` in Å: mean over the reference frames with these atoms, or the lengths
        in ``atoms`` when there are none.
    """
    bonds = molecular_bonds(atoms) if bonds is None else bonds
    same = same_atom_positions(reference_frames, atoms.numbers)
    if same is None:
        return bonds, np.arange(len(bonds)), bond_lengths(atoms.positions, bonds)
    fluxional = bond_lengths(same, bonds).std(axis=0) > FLUXIONAL_STD
    hubs = sorted({int(b[np.argmin(atoms.numbers[b])]) for b in bonds[fluxional]})
    groups = [b[None] for b in bonds[~fluxional]]
    groups += [_partner_pairs(hub, atoms, same) for hub in hubs]
    pairs = np.concatenate(groups) if groups else np.zeros((0, 2), dtype=int)
    group = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    return pairs, group, group_lengths(same, pairs, group).mean(axis=0)


def group_lengths(positions: np.ndarray, pairs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Length (Å) of each watched group, the shortest of its pairs, in one frame ``[n, 3]`` or many ``[T, n, 3]``."""
    lengths = bond_lengths(positions, pairs)
    shortest = np.full((*lengths.shape[:-1], int(groups.max()) + 1), np.inf)
    np.minimum.at(shortest, (..., groups), lengths)
    return shortest


def _partner_pairs(hub: int, atoms: Atoms, same: np.ndarray) -> np.ndarray:
    """Pairs of ``hub`` with every atom it is bonded to, fluxionally, in some reference frame."""
    cutoffs = np.asarray(natural_cutoffs(atoms)) + BOND_SKIN
    others = np.array([k for k in range(len(atoms)) if k != hub])
    pairs = np.sort(np.stack([np.full_like(others, hub), others], 1), axis=1)
    lengths = bond_lengths(same, pairs)
    bonded_somewhere = (lengths < cutoffs[hub] + cutoffs[others]).any(axis=0)
    return pairs[bonded_somewhere & (lengths.std(axis=0) > FLUXIONAL_STD)]


def group_name(symbols: Sequence[str], pairs: np.ndarray) -> str:
    """``"C1-H5"`` for one bond; ``"H11-O3/O5"`` for a fluxional atom and its partners (molecule indices)."""
    if len(pairs) == 1:
        i, j = pairs[0]
        return f"{symbols[i]}{i}-{symbols[j]}{j}"
    hub = shared_atom(pairs)
    partners = [int(k) for pair in pairs for k in pair if k != hub]
    return f"{symbols[hub]}{hub}-" + "/".join(f"{symbols[k]}{k}" for k in partners)


def shared_atom(pairs: np.ndarray) -> int:
    """The atom common to a fluxional group's pairs (the proton of ``H11-O3/O5``)."""
    return int(np.bincount(np.ravel(pairs)).argmax())
