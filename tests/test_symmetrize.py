"""Test-time symmetrisation: exact invariance under its group, smaller error under all rotations."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from remul_ff.data.batch import Structure, collate
from remul_ff.integrations import REMULCalculator
from remul_ff.models import predict
from remul_ff.models.symmetrize import GROUP_ORDERS, RotationAveraged, rotation_group, with_test_time_rotations
from remul_ff.testing import finite_difference_force_error, rotation_errors
from remul_ff.training.losses import rotate_vectors
from tests.helpers import jittered_molecules, tiny_model


def batch_of(frames):
    return collate([Structure(a.positions, a.numbers) for a in frames], dtype=torch.float64)


@pytest.mark.parametrize("order", GROUP_ORDERS)
def test_rotation_groups_are_closed_groups_of_proper_rotations(order):
    group = rotation_group(order)
    assert group.shape == (order, 3, 3)
    assert torch.equal(group[0], torch.eye(3, dtype=torch.float64))
    assert torch.allclose(group @ group.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(order, 3, 3))
    assert torch.allclose(torch.linalg.det(group), torch.ones(order, dtype=torch.float64))
    products = (group[:, None] @ group[None]).reshape(-1, 9)
    members = group.reshape(-1, 9)
    assert all((members == p).all(-1).any() for p in products)  # closed under products
    assert len({tuple(m.tolist()) for m in members}) == order  # no repeats


def test_unknown_group_size_is_refused_in_a_sentence():
    with pytest.raises(ValueError, match="4, 12, 24 rotations, not 6"):
        rotation_group(6)


@pytest.mark.parametrize("order", GROUP_ORDERS)
def test_averaged_model_is_exactly_invariant_under_its_group(order):
    model, batch = RotationAveraged(tiny_model(), order), batch_of(jittered_molecules("CH3CH2OH", 2) + [molecule("CH4")])
    base = predict(model, batch)
    for rotation in rotation_group(order):
        per_atom = rotation.expand(batch.n_atoms, 3, 3)
        moved = predict(model, batch.replace(positions=rotate_vectors(batch.positions, per_atom)))
        assert torch.allclose(moved.energy, base.energy, rtol=0, atol=1e-10)
        assert torch.allclose(moved.forces, rotate_vectors(base.forces, per_atom), rtol=0, atol=1e-10)
    # the plain model is not: the test could fail
    plain = predict(tiny_model(), batch)
    turned = predict(
        tiny_model(), batch.replace(positions=rotate_vectors(batch.positions, rotation_group(4)[1].expand(batch.n_atoms, 3, 3)))
    )
    assert float((turned.energy - plain.energy).abs().max()) > 1e-4


def test_averaging_over_the_cube_shrinks_the_error_under_random_rotations():
    torch.manual_seed(1)
    batch = batch_of(jittered_molecules("CH3CH2OH", 4))
    plain = rotation_errors(tiny_model(), batch, n_rotations=16)
    torch.manual_seed(1)
    averaged = rotation_errors(RotationAveraged(tiny_model(), 24), batch, n_rotations=16)
    assert averaged[0] < 0.5 * plain[0] and averaged[1] < 0.5 * plain[1]


def test_averaged_forces_are_the_gradient_of_the_averaged_energy():
    model, batch = RotationAveraged(tiny_model(), 4), batch_of([molecule("CH3OH")])
    assert finite_difference_force_error(model, batch) < 1e-6


def test_calculator_averages_and_keeps_its_checks(trained_model_file):
    atoms = molecule("CH3CH2OH")
    plain = REMULCalculator(trained_model_file)
    averaged = REMULCalculator(trained_model_file, test_time_rotations=12)
    by_hand = RotationAveraged(plain.model, 12)
    batch = batch_of([atoms])
    atoms.calc = averaged
    assert abs(atoms.get_potential_energy() - float(predict(by_hand, batch).energy[0])) < 1e-9
    assert atoms.get_forces() == pytest.approx(predict(by_hand, batch).forces.numpy(), abs=1e-9)
    with pytest.raises(ValueError, match="compile=True runs the plain model"):
        REMULCalculator(trained_model_file, test_time_rotations=4, compile=True)


def test_zero_rotations_is_the_model_itself():
    model = tiny_model()
    assert with_test_time_rotations(model, 0) is model
