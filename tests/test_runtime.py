"""The one way to a ready model (``remul_ff.models.runtime``): files, loaded models and committees
come out checked, frozen, on the asked dtype, in inference form, with the same energies."""

from __future__ import annotations

import pytest
import torch

from remul_ff.data.batch import Structure, collate
from remul_ff.errors import CheckpointError
from remul_ff.models import load_model, predict
from remul_ff.models.committee import Committee
from remul_ff.models.runtime import ready_members, ready_model
from remul_ff.models.symmetrize import RotationAveraged
from tests.helpers import jittered_molecules, tiny_model
from tests.test_new_user_problems import write_model_file


def ethanol(dtype=torch.float64):
    return collate([Structure.from_atoms(a) for a in jittered_molecules("CH3CH2OH", 2)]).to(dtype=dtype)


def test_a_file_becomes_a_frozen_inference_model_with_the_files_energies(tmp_path):
    path = write_model_file(tmp_path / "a.pt")
    model = ready_model(path, dtype=torch.float32)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.merged_edge_proj is not None and next(model.parameters()).dtype == torch.float32
    reference = predict(load_model(path), ethanol())
    assert torch.allclose(predict(ready_model(path), ethanol()).energy, reference.energy, rtol=0, atol=1e-9)


def test_a_list_becomes_a_checked_committee_of_files_and_models(tmp_path):
    first, second = write_model_file(tmp_path / "a.pt"), tiny_model(width=32)
    committee = ready_model([first, second])
    assert isinstance(committee, Committee) and len(committee.members) == 2
    mean = (predict(ready_model(first), ethanol()).energy + predict(ready_model(second), ethanol()).energy) / 2
    assert torch.allclose(predict(committee, ethanol()).energy, mean, rtol=0, atol=1e-9)
    xtb_like = tiny_model()
    xtb_like.head.set_extra_state({"e0s": [-10.7, -48.8, -71.0, -103.2]})
    with pytest.raises(CheckpointError, match=r"a.pt and model 2 cannot form a committee: their isolated-atom energies"):
        ready_model([first, xtb_like])


def test_every_potential_meets_the_model_protocol(tmp_path):
    from remul_ff.models.runtime import EnergyModel

    path = write_model_file(tmp_path / "a.pt")
    for model in (load_model(path), tiny_model("egnn"), ready_model([path, path]), ready_members(path, test_time_rotations=4)[0]):
        assert isinstance(model, EnergyModel), type(model).__name__
    assert not isinstance(torch.nn.Linear(3, 1), EnergyModel)


def test_rotation_averaging_and_bad_sources_are_handled(tmp_path):
    members = ready_members(write_model_file(tmp_path / "a.pt"), test_time_rotations=12)
    assert len(members) == 1 and isinstance(members[0], RotationAveraged)
    with pytest.raises(ValueError, match="model 1 is a Linear, not a remul-ff energy model"):
        ready_model(torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match="no model given"):
        ready_model([])
    with pytest.raises(CheckpointError, match="missing.pt"):
        ready_model(tmp_path / "missing.pt")
