"""replica_bonds: the collapse monitor's bonds for a whole batch at once, the same as ASE's per molecule."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from remul_ff.data import bonds as bonds_module
from remul_ff.data.bonds import molecular_bonds, replica_bonds


def _mixed_batch(seed: int = 0, copies: int = 6, rattle: float = 0.15) -> list:
    """Replicas of several sizes, interleaved, rattled so that some bonds are near the cutoff."""
    rng = np.random.default_rng(seed)
    shapes = [molecule(name) for name in ("CH3CH2OH", "C6H6", "H2O", "CH3COCH3", "H")]
    out = []
    for k in range(copies * len(shapes)):
        atoms = shapes[k % len(shapes)].copy()
        atoms.positions += rng.normal(0, rattle, atoms.positions.shape)
        out.append(atoms)
    return out


def _lexicographic(pairs: np.ndarray) -> np.ndarray:
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _found(batch: list) -> list:
    positions = np.concatenate([a.positions for a in batch])
    return replica_bonds(positions, np.concatenate([a.numbers for a in batch]), [len(a) for a in batch])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replica_bonds_are_the_ase_bonds_of_each_replica(seed):
    batch = _mixed_batch(seed)
    found = _found(batch)
    assert len(found) == len(batch)
    for atoms, bonds in zip(batch, found):
        assert np.array_equal(bonds, _lexicographic(molecular_bonds(atoms)))
    assert sum(len(b) for b in found) > 0


def test_large_molecules_and_small_chunks_give_the_same_bonds(monkeypatch):
    batch = _mixed_batch(3)
    expected = _found(batch)
    monkeypatch.setattr(bonds_module, "ALL_PAIRS_MAX_ATOMS", 5)  # ethanol, benzene, acetone: ASE's cell list
    monkeypatch.setattr(bonds_module, "PAIRS_PER_CHUNK", 7)  # many chunks of a few replicas
    for got, want in zip(_found(batch), expected):
        assert np.array_equal(got, want)


def test_a_bond_exactly_at_the_cutoff_is_not_a_bond_in_either():
    h2 = molecule("H2")
    cutoff = 2 * (0.31 + bonds_module.BOND_SKIN)  # ASE's covalent radius of H is 0.31 Å
    h2.positions = [[0.0, 0.0, 0.0], [0.0, 0.0, cutoff]]
    assert len(molecular_bonds(h2)) == 0 and len(_found([h2])[0]) == 0
    h2.positions[1, 2] = np.nextafter(cutoff, 0)
    assert len(molecular_bonds(h2)) == 1 and len(_found([h2])[0]) == 1
