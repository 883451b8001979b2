"""Covalent bonds of a molecule and their reference lengths, as Fu et al. (2023, MDsim) define them.

Bonds are pairs closer than the sum of ASE's covalent radii plus ASE's default neighbour-list skin
of 0.3 Å on each atom (``NeighborList(natural_cutoffs(atoms))``), found on one frame. The reference
length of a bond is its **mean** over the frames of the reference data set, not its length in
the starting frame: a replica that starts from a stretched frame is then not half-way to the
0.5 Å collapse criterion already.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.neighborlist import natural_cutoffs, neighbor_list

# Covalent radii alone miss most bonds of a hot molecule: in a 500 K rMD17 ethanol frame the C-C
# (1.61 Å vs 1.52), C-O and O-H bonds are all longer than the sum of the radii.
BOND_SKIN = 0.3


def molecular_bonds(atoms: Atoms) -> np.ndarray:
    """``[B, 2]`` indices (i < j) of bonded pairs: closer than the sum of covalent radii + 2 x 0.3 Å."""
    i, j = neighbor_list("ij", atoms, np.asarray(natural_cutoffs(atoms)) + BOND_SKIN)
    return np.stack([i, j], 1)[i < j]


def bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Lengths (Å) of ``bonds`` ``[B, 2]`` in one frame ``[n, 3]`` or many ``[T, n, 3]``."""
    positions = np.asarray(positions, dtype=np.float64)
    return np.linalg.norm(positions[..., bonds[:, 1], :] - positions[..., bonds[:, 0], :], axis=-1)


def mean_bond_lengths(frames: Sequence[Atoms], bonds: np.ndarray, numbers: np.ndarray) -> np.ndarray | None:
    """Mean length of each bond over the ``frames`` with the same atoms (same ``numbers``, same order).

    Returns ``None`` when no frame has these atoms, so callers can fall back to the starting frame.
    """
    same = [f.positions for f in frames if len(f) == len(numbers) and np.array_equal(f.numbers, numbers)]
    return bond_lengths(np.stack(same), bonds).mean(axis=0) if same else None
