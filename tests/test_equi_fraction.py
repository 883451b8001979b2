"""``loss.equi_fraction``: only the first molecules' moved copy enters REMUL's equivariance loss,
divided by their own counts, so the moved pass costs a fraction of the task's."""

from __future__ import annotations

import pytest
import torch

from remul_ff.config import LossConfig
from remul_ff.data.batch import collate
from remul_ff.models import predict
from remul_ff.training.losses import random_rigid_motion, remul_losses, rotate_batch, task_loss
from remul_ff.training.trainer import Trainer
from tests.conftest import tiny_model
from tests.test_training import read_log, tiny_config


def test_equi_fraction_puts_only_the_first_molecules_moved_copy_in_the_equivariance_loss(ethanol_structures):
    model = tiny_model(dtype=torch.float64)
    batch, part = collate(ethanol_structures[:6]), collate(ethanol_structures[:2])
    rotations, translations = random_rigid_motion(6, torch.float64, "cpu")
    config = LossConfig()
    for target in ("label", "prediction"):
        task, equi = remul_losses(model, batch, rotations, translations, target, part)
        full_task, _ = remul_losses(model, batch, rotations, translations, target)
        assert float(task.total(config).detach()) == pytest.approx(float(full_task.total(config).detach()), rel=1e-12)
        assert equi.n_energy == 2 and equi.n_forces == 3 * part.n_atoms
    moved = rotate_batch(part, rotations[:2], translations[:2])
    _, equi = remul_losses(model, batch, rotations, translations, "label", part)
    direct = task_loss(predict(model, moved, training=True), moved)
    assert float(equi.total(config).detach()) == pytest.approx(float(direct.total(config).detach()), rel=1e-9)


def test_training_with_a_quarter_moved_copy_divides_by_the_moved_counts(xtb_ethanol_file, tmp_path):
    trainer = Trainer(tiny_config(xtb_ethanol_file, tmp_path, loss={"equi_fraction": 0.25}, train={"device": "cpu"}),
                      progress=False)
    trainer.setup()
    local = trainer._local_batch(trainer.data.train[:8])
    assert local.equi.n_molecules == 2 and local.equi_counts == (2.0, 3.0 * local.equi.n_atoms)
    full = Trainer(tiny_config(xtb_ethanol_file, tmp_path / "full", train={"device": "cpu"}), progress=False)
    full.setup()
    assert full._local_batch(trainer.data.train[:8]).equi is None
    trainer._loop()
    assert float(read_log(tmp_path)[-1]["train_equi"]) > 0
