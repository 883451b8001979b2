"""Physics of the REMUL transformer: conservative forces, exact invariances, smooth cutoff, and
proof that rotational symmetry is *not* built in."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms

from remul_ff.data.batch import Structure, collate
from remul_ff.errors import DataError
from remul_ff.models import predict
from remul_ff.models.transformer import cartesian_monomials, num_monomials
from remul_ff.testing import (
    cutoff_continuity_error,
    finite_difference_force_error,
    permutation_error,
    rotation_errors,
    translation_error,
)
from tests.helpers import jittered_molecules, tiny_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def ethanol_batch(n: int = 3, dtype=torch.float64):
    return collate(
        [Structure.from_atoms(a) for a in jittered_molecules("CH3CH2OH", n)] + [Structure.from_atoms(jittered_molecules("H2O", 1)[0])]
    ).to(dtype=dtype)


@pytest.mark.parametrize("angular_degree", [0, 3])
def test_forces_match_finite_differences_float64(angular_degree):
    model, batch = tiny_model(angular_degree=angular_degree), ethanol_batch(2)
    assert finite_difference_force_error(model, batch) < 1e-6


@pytest.mark.parametrize("angular_degree", [0, 3])
def test_exact_translation_and_permutation_invariance(angular_degree):
    model, batch = tiny_model(angular_degree=angular_degree), ethanol_batch(3)
    for energy_err, force_err in (translation_error(model, batch), permutation_error(model, batch)):
        assert energy_err < 1e-10 and force_err < 1e-10


def test_energy_and_forces_are_continuous_across_r_max(monkeypatch):
    model = tiny_model(r_max=4.0)
    atoms = Atoms("HOH", positions=[[0, 0, 0], [0.96, 0, 0], [2.0, 1.0, 0.5]])
    batch = collate([Structure.from_atoms(atoms)])
    energy_jump, force_jump = cutoff_continuity_error(model, batch, r_max=4.0, delta=1e-6)
    assert energy_jump < 1e-9 and force_jump < 1e-8
    # The check can fail: a hard cutoff (no envelope) gives a visible jump.
    monkeypatch.setattr("remul_ff.models.transformer.polynomial_envelope", lambda r, r_max, p: (r < r_max).to(r.dtype))
    energy_jump, _ = cutoff_continuity_error(model, batch, r_max=4.0, delta=1e-6)
    assert energy_jump > 1e-4


@pytest.mark.parametrize("angular_degree", [0, 2])
def test_untrained_model_is_not_rotation_invariant(angular_degree):
    """The raw vector inputs make the architecture unconstrained; REMUL must teach the symmetry."""
    energy_err, force_err = rotation_errors(tiny_model(angular_degree=angular_degree), ethanol_batch(3))
    assert energy_err > 1e-4 and force_err > 1e-4


def test_cartesian_monomials_are_each_monomial_once():
    monomials = cartesian_monomials(torch.tensor([[2.0, 3.0, 5.0]], dtype=torch.float64), 3)[0]
    # products of the primes 2, 3, 5 are distinct exactly when the monomials are
    expected = sorted(2**a * 3**b * 5**c for a in range(4) for b in range(4) for c in range(4) if 1 <= a + b + c <= 3)
    assert sorted(monomials.tolist()) == expected and num_monomials(3) == len(expected) == 19


def test_far_apart_molecules_give_the_sum_of_their_energies():
    model = tiny_model()
    a, b = jittered_molecules("CH3CH2OH", 1)[0], jittered_molecules("H2O", 1, seed=3)[0]
    b.positions += [50.0, 0, 0]
    together = predict(model, collate([Structure.from_atoms(a + b)])).energy
    apart = predict(model, collate([Structure.from_atoms(a), Structure.from_atoms(b)])).energy.sum()
    assert float(abs(together - apart)) < 1e-9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_runs_in_both_dtypes_on_each_device(device, dtype):
    model = tiny_model(dtype=dtype).to(device)
    batch = ethanol_batch(2, dtype).to(device)
    prediction = predict(model, batch)
    assert prediction.energy.dtype == torch.float64 and prediction.forces.dtype == dtype
    assert prediction.forces.device.type == device and torch.isfinite(prediction.forces).all()
    assert torch.allclose(prediction.atomic_energies.sum(), prediction.energy.sum())


def test_unknown_element_names_the_known_ones():
    model = tiny_model()
    with pytest.raises(DataError, match="not trained on Fe; it knows only H, C, N, O"):
        model.elements.check(torch.tensor([1, 26]))


@pytest.mark.parametrize("angular_degree", [0, 2])
def test_inference_copy_gives_the_same_energies_and_forces_and_leaves_the_model_alone(angular_degree):
    model, batch = tiny_model(angular_degree=angular_degree), ethanol_batch(3)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    folded = model.for_inference()
    reference, merged = predict(model, batch), predict(folded, batch)
    assert torch.allclose(merged.energy, reference.energy, rtol=0, atol=1e-12)
    assert torch.allclose(merged.forces, reference.forces, rtol=0, atol=1e-12)
    assert isinstance(folded.edge_encoder.mlp[2], torch.nn.Identity) and folded.for_inference() is folded
    assert folded.merged_edge_proj is not None and model.merged_edge_proj is None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the trainable model is untouched
    assert model.training and all(p.requires_grad for p in model.parameters())
    # the check can fail: dropping the layer without folding it into the projections changes the energies
    broken = model.for_inference()
    with torch.no_grad():
        broken.merged_edge_proj.weight.copy_(torch.cat([block.edge_proj.weight for block in model.blocks]))
        broken.merged_edge_proj.bias.copy_(torch.cat([block.edge_proj.bias for block in model.blocks]))
    assert not torch.allclose(predict(broken, batch).energy, reference.energy, rtol=0, atol=1e-6)
