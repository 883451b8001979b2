"""EGNN baseline: exact E(3) invariance of energy and equivariance of forces, conservative forces,
and the same smooth cutoff, checked with the reusable helpers of remul_ff.testing."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms

from remul_ff.data.batch import Structure, collate
from remul_ff.testing import (
    assert_equivariant,
    cutoff_continuity_error,
    finite_difference_force_error,
    permutation_error,
    translation_error,
)
from tests.helpers import jittered_molecules, tiny_model


def batch(n: int = 3):
    return collate(
        [Structure.from_atoms(a) for a in jittered_molecules("CH3CH2OH", n)] + [Structure.from_atoms(jittered_molecules("H2O", 1)[0])]
    )


@pytest.mark.parametrize("update_coordinates", [True, False])
def test_egnn_is_exactly_equivariant_float64(update_coordinates):
    model = tiny_model("egnn", update_coordinates=update_coordinates)
    assert_equivariant(model, batch(), atol=1e-10)
    for energy_err, force_err in (translation_error(model, batch()), permutation_error(model, batch())):
        assert energy_err < 1e-10 and force_err < 1e-10


def test_equivariance_helper_can_fail_on_the_unconstrained_transformer():
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(tiny_model("transformer"), batch(), atol=1e-10)


def test_egnn_forces_match_finite_differences():
    assert finite_difference_force_error(tiny_model("egnn"), batch(2)) < 1e-6


def test_egnn_is_continuous_across_r_max():
    model = tiny_model("egnn", r_max=4.0)
    atoms = Atoms("HOH", positions=[[0, 0, 0], [0.96, 0, 0], [2.0, 1.0, 0.5]])
    energy_jump, force_jump = cutoff_continuity_error(model, collate([Structure.from_atoms(atoms)]), r_max=4.0, delta=1e-6)
    assert energy_jump < 1e-9 and force_jump < 1e-8


def test_egnn_trains_through_the_same_trainer(xtb_ethanol_file, tmp_path):
    from remul_ff.config import config_from_dict
    from remul_ff.training.trainer import Trainer

    config = config_from_dict(
        {
            "output_dir": str(tmp_path),
            "data": {"path": str(xtb_ethanol_file), "valid": 8},
            "model": {"kind": "egnn", "width": 16, "depth": 2},
            "loss": {"mode": "none"},
            "train": {"epochs": 2, "batch_size": 8, "device": "cpu"},
        }
    )
    row = Trainer(config, progress=False).run()
    assert row["val_equi_forces_rel"] < 1e-5  # float32 rounding only: equivariant by construction
    assert torch.load(tmp_path / "model.pt", weights_only=True)["model_kind"] == "egnn"
