"""A training step on an accelerator reads nothing back from the device (issue 13, GPU training).

The batch is collated on the host, which also works out what depends on the molecule sizes (pairs,
atoms per molecule) and hands it to the device copy; the model trains over every same-molecule pair.
The device's part of the step (losses, REMUL's rotated copy, backward, optimiser, EMA) then runs
under the host-sync guard of ``tests/host_sync.py``.
"""

from __future__ import annotations

import pytest
import torch

from remul_ff.config import config_from_dict
from remul_ff.data.batch import collate, concat_batches, device_batch
from remul_ff.data.neighbors import _distinct_pairs, all_pairs, largest_molecule, radius_graph
from remul_ff.models.common import with_fixed_pairs
from remul_ff.training.trainer import Trainer
from tests.host_sync import HostSync, forbid_host_sync
from tests.test_training import TINY_MODEL

EGNN = {"kind": "egnn", "width": 16, "depth": 2, "r_max": 4.0, "num_radial": 6}


def trainer_for(data, out, fixed_pairs: bool, **sections) -> Trainer:
    """A set-up trainer; ``fixed_pairs`` gives it the accelerator's choice (every same-molecule pair)."""
    values = {
        "output_dir": str(out),
        "data": {"path": str(data), "valid": 8},
        "model": sections.get("model", TINY_MODEL),
        "loss": sections.get("loss", {}),
        "train": {"batch_size": 4, "seed": 3, **sections.get("train", {})},
    }
    trainer = Trainer(config_from_dict(values), progress=False)
    trainer.setup()
    if fixed_pairs:
        trainer.fixed_pairs = True
        trainer.training_model = trainer.forward_model = with_fixed_pairs(trainer.model, 64)
    return trainer


def host_tensors(trainer: Trainer) -> list[torch.Tensor]:
    """The optimisers' step counts: torch keeps them on the host on every device."""
    optimizers = [trainer.optimizer] + ([trainer.gradnorm.optimizer] if trainer.gradnorm else [])
    return [state["step"] for optimizer in optimizers for state in optimizer.state.values()]


@pytest.mark.parametrize("loss", [{"mode": "remul"}, {"mode": "augment"}, {"mode": "remul", "weighting": "gradnorm"}])
@pytest.mark.parametrize("model", ["transformer", "egnn"])
def test_the_devices_part_of_a_training_step_reads_nothing_back(xtb_ethanol_file, tmp_path, loss, model):
    sections = {"loss": loss} | ({"model": EGNN} if model == "egnn" else {})
    trainer = trainer_for(xtb_ethanol_file, tmp_path, fixed_pairs=True, **sections)
    structures = trainer.data.train[:4]
    trainer.step(structures)  # the optimiser creates its state in the first step
    local = trainer._local_batch(structures)  # the host's part: collate, sizes and pairs, copy
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with forbid_host_sync(host=host_tensors(trainer)):
        loss, _, _ = trainer._step_on(local)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))  # it did train


def test_the_guard_catches_the_radius_graph_in_a_training_step(xtb_ethanol_file, tmp_path):
    trainer = trainer_for(xtb_ethanol_file, tmp_path, fixed_pairs=False)
    structures = trainer.data.train[:4]
    trainer.step(structures)
    local = trainer._local_batch(structures)
    with pytest.raises(HostSync), forbid_host_sync(host=host_tensors(trainer)):
        trainer._step_on(local)


@pytest.mark.parametrize("model", [TINY_MODEL, EGNN])
def test_training_over_every_pair_takes_the_radius_graphs_step(xtb_ethanol_file, tmp_path, model):
    """Same initial weights, same batch: the pairs beyond r_max add exact zeros (float64)."""
    model = model | {"r_max": 3.0}  # ethanol's farthest atoms are ~3.5-4 Å apart: some pairs lie beyond
    steps = {}
    for fixed in (False, True):
        trainer = trainer_for(xtb_ethanol_file, tmp_path / str(fixed), fixed_pairs=fixed, model=model, train={"dtype": "float64"})
        for _ in range(3):
            trainer.step(trainer.data.train[:4])
        steps[fixed] = [p.detach().clone() for p in trainer.model.parameters()]
    batch = collate(trainer.data.train[:4])
    assert radius_graph(batch.positions, 3.0, batch.molecule_index)[0].shape[1] < 4 * 9 * 8  # pairs were left out
    for radius, every in zip(steps[False], steps[True]):
        torch.testing.assert_close(every, radius, atol=1e-10, rtol=1e-8)


def test_a_device_batch_knows_its_sizes_and_pairs_and_so_does_its_rotated_join(ethanol_structures):
    structures = ethanol_structures[:3]
    batch = device_batch(structures, "cpu", torch.float32, every_pair=True)
    reference = collate(structures, torch.float32)
    with forbid_host_sync():  # found on the host when the batch was made, not again
        sizes = batch.atoms_per_molecule
        pairs, _ = all_pairs(batch.positions, batch.molecule_index, batch.layout)
        largest = largest_molecule(batch.molecule_index, batch.layout)
        joined = concat_batches(batch, batch)
        joined_pairs, _ = all_pairs(joined.positions, joined.molecule_index, joined.layout)
        joined_sizes = joined.atoms_per_molecule
    assert torch.equal(sizes, torch.bincount(reference.molecule_index)) and largest == 9
    assert torch.equal(pairs, _distinct_pairs(reference.molecule_index))
    fresh = torch.cat([reference.molecule_index, reference.molecule_index + 3])
    assert torch.equal(joined_pairs, _distinct_pairs(fresh))
    assert torch.equal(joined_sizes, torch.bincount(fresh))
    assert torch.equal(batch.positions, reference.positions)
