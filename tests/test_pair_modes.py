"""All same-molecule pairs instead of the radius graph: the same potential, shapes fixed by the molecules."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from remul_ff.data.batch import Structure, collate
from remul_ff.data.neighbors import radius_graph
from remul_ff.models import predict
from remul_ff.models.common import AUTO_ALL_PAIRS_MAX_ATOMS
from tests.helpers import jittered_molecules, tiny_model


def mixed_batch():
    frames = jittered_molecules("CH3CH2OH", 2, scale=0.1) + [molecule("H2O"), molecule("CH4")]
    return collate([Structure.from_atoms(a) for a in frames], dtype=torch.float64)


@pytest.mark.parametrize("kind", ["transformer", "egnn"])
def test_all_pairs_give_the_radius_graph_energies_and_forces(kind):
    model, batch = tiny_model(kind, r_max=2.0), mixed_batch()  # ethanol spans ~3.7 Å: many pairs lie beyond r_max
    model.pair_mode = "radius"
    sparse = predict(model, batch)
    model.pair_mode = "all"
    dense = predict(model, batch)
    n_all = model.pairs(batch.positions, batch.molecule_index)[0].shape[1]
    assert n_all > radius_graph(batch.positions, 2.0, batch.molecule_index)[0].shape[1] + 50
    assert torch.allclose(dense.energy, sparse.energy, rtol=1e-13, atol=0)
    assert torch.allclose(dense.forces, sparse.forces, rtol=0, atol=1e-12)


def test_auto_takes_all_pairs_for_small_molecules_only():
    model, batch = tiny_model(r_max=2.0), mixed_batch()
    model.pair_mode = "auto"
    sizes = torch.bincount(batch.molecule_index)
    assert model.pairs(batch.positions, batch.molecule_index)[0].shape[1] == int((sizes * (sizes - 1)).sum())
    benzene = molecule("C6H6")
    stacked = benzene + benzene.copy()
    stacked.positions[len(benzene) :, 2] += 3.5
    big = collate([Structure.from_atoms(stacked)], dtype=torch.float64)
    assert len(big.positions) > AUTO_ALL_PAIRS_MAX_ATOMS
    edges = model.pairs(big.positions, big.molecule_index)[0]
    assert torch.equal(edges, radius_graph(big.positions, 2.0, big.molecule_index)[0])
