"""Recipe options: ``loss.equi_fraction`` (only the first molecules' moved copy enters REMUL's
equivariance loss, divided by their own counts) and ``loss.stage_two_fraction`` (the end of the run
with other loss weights, the best model chosen among its epochs)."""

from __future__ import annotations

import logging

import pytest
import torch

from remul_ff.cli import training_summary
from remul_ff.config import LossConfig
from remul_ff.data.batch import collate
from remul_ff.models import predict
from remul_ff.training.losses import random_rigid_motion, remul_losses, rotate_batch, task_loss
from remul_ff.training.trainer import Trainer
from tests.helpers import tiny_model
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
    trainer = Trainer(tiny_config(xtb_ethanol_file, tmp_path, loss={"equi_fraction": 0.25}, train={"device": "cpu"}), progress=False)
    trainer.setup()
    local = trainer._local_batch(trainer.data.train[:8])
    assert local.equi.n_molecules == 2 and local.equi_counts == (2.0, 3.0 * local.equi.n_atoms)
    full = Trainer(tiny_config(xtb_ethanol_file, tmp_path / "full", train={"device": "cpu"}), progress=False)
    full.setup()
    assert full._local_batch(trainer.data.train[:8]).equi is None
    trainer._loop()
    assert float(read_log(tmp_path)[-1]["train_equi"]) > 0


def test_stage_two_switches_the_loss_weights_for_the_last_share_of_the_run(xtb_ethanol_file, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="remul_ff")
    loss = {"stage_two_fraction": 0.4, "stage_two_energy_weight": 1000.0, "stage_two_forces_weight": 1.0}
    trainer = Trainer(tiny_config(xtb_ethanol_file, tmp_path, loss=loss, train={"epochs": 5, "device": "cpu"}), progress=False)
    trainer.setup()
    stages = []
    trainer.epoch_end_hooks.append(lambda epoch: stages.append((trainer.stage, trainer.loss_config.energy_weight)))
    trainer._loop()
    assert stages == [(1, 1.0), (1, 1.0), (2, 1000.0), (2, 1000.0), (2, 1000.0)]  # from 60% of 5 epochs on
    assert "epoch 3: stage two, energy weight 1000" in caplog.text
    assert capsys.readouterr().out == ""  # a library logs; only the command line prints
    rows = read_log(tmp_path)
    val_losses = [float(r["val_loss"]) for r in rows]
    best = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["best"]
    assert best == min(val_losses[3:])  # chosen among stage-two epochs (epoch 4 on; epoch 3 switched after its validation)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["stage"] == 2
    kept = torch.load(tmp_path / "model.pt", weights_only=True)["epoch"]
    assert float(rows[kept - 1]["val_loss"]) == best and kept >= 4
    assert f"best model (epoch {kept} of 5)" in training_summary(str(tmp_path), "data.xyz")
