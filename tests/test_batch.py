"""The data contract: collate, move, concatenate and split batches."""

from __future__ import annotations

import numpy as np
import torch

from remul_ff.data.batch import collate, concat_batches
from tests.helpers import jittered_molecules, labelled


def test_collate_to_and_split_round_trip():
    structures = labelled(jittered_molecules("CH3CH2OH", 2) + jittered_molecules("H2O", 1))
    batch = collate(structures)
    assert batch.n_molecules == 3 and batch.atoms_per_molecule.tolist() == [9, 9, 3]
    assert batch.molecule_index.tolist() == [0] * 9 + [1] * 9 + [2] * 3
    moved = batch.to(dtype=torch.float32)
    assert moved.positions.dtype == torch.float32 and moved.energy.dtype == torch.float64  # energies stay float64
    assert moved.atomic_numbers.dtype == torch.long
    for got, want in zip(batch.split(), structures):
        np.testing.assert_array_equal(got.numbers, want.numbers)
        np.testing.assert_allclose(got.positions, want.positions)
        assert got.energy == want.energy


def test_concat_batches_offsets_molecule_index():
    a = collate(labelled(jittered_molecules("H2O", 2)))
    b = collate(labelled(jittered_molecules("CH4", 1)))
    both = concat_batches(a, b)
    assert both.n_molecules == 3 and both.molecule_index.tolist() == [0] * 3 + [1] * 3 + [2] * 5
    assert torch.equal(both.energy, torch.cat([a.energy, b.energy]))
