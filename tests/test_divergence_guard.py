"""A diverging run is caught: a loss spike rolls back to the last good epoch with a smaller step,
and a run that keeps diverging stops with one sentence, keeping its best model."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch

from remul_ff.training.guard import DivergenceGuard
from remul_ff.training.trainer import Trainer
from tests.test_training import read_log, tiny_config


def test_guard_flags_non_finite_and_large_losses_only_after_its_history():
    guard = DivergenceGuard(factor=10.0, min_history=3)
    assert not guard.is_spike(100.0)  # early epochs fall fast: no spike without history
    assert not guard.is_spike(1.0) and not guard.is_spike(1.0)
    assert guard.is_spike(math.nan) and guard.is_spike(math.inf)
    assert guard.running_median() == 1.0
    assert guard.is_spike(10.5)  # above 10 x the median of (100, 1, 1)
    assert not guard.is_spike(9.5)
    assert guard.history == [100.0, 1.0, 1.0, 9.5]  # spikes never join the history
    assert not DivergenceGuard(factor=0.0).is_spike(math.nan)  # disabled


def blow_up_weights_at(trainer: Trainer, epoch: int) -> dict:
    """Make one epoch diverge: its training steps run on weights scaled 1000x (a bad step's aftermath)."""
    seen = {}
    train_epoch = trainer._train_epoch

    def diverging_epoch():
        if trainer.epoch == epoch:
            seen["lr_before"] = trainer.optimizer.param_groups[0]["lr"]
            with torch.no_grad():
                for parameter in trainer.model.parameters():
                    parameter.mul_(1000.0)
        stats = train_epoch()
        if trainer.epoch == epoch - 1:
            seen["weights"] = copy.deepcopy(trainer.model.state_dict())
        return stats

    trainer._train_epoch = diverging_epoch
    return seen


def test_a_spike_rolls_back_to_the_last_good_epoch_with_half_the_learning_rate(xtb_ethanol_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="remul_ff")
    train = {"epochs": 6, "device": "cpu", "scheduler": "constant", "ema_decay": 0.0}
    trainer = Trainer(tiny_config(xtb_ethanol_file, tmp_path, train=train), progress=False)
    trainer.setup()
    seen = blow_up_weights_at(trainer, epoch=5)
    trainer._loop()
    rows = read_log(tmp_path)
    losses = [float(r["train_loss"]) for r in rows]
    assert not losses[4] <= 10 * sorted(losses[:4])[2]  # the made-up divergence is a spike (or NaN)
    assert "rolled back to the last good epoch" in caplog.text  # logged: the library prints nothing itself
    assert trainer.guard.rollbacks == 1
    assert float(rows[5]["lr"]) == pytest.approx(0.5 * seen["lr_before"])
    assert losses[5] < 2 * losses[3]  # epoch 6 trained on from epoch 4's weights, not the blown-up ones
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["guard"]["rollbacks"] == 1


def test_the_rollback_restores_the_last_good_weights_exactly(xtb_ethanol_file, tmp_path):
    train = {"epochs": 5, "device": "cpu", "ema_decay": 0.5}
    trainer = Trainer(tiny_config(xtb_ethanol_file, tmp_path, train=train), progress=False)
    trainer.setup()
    seen = blow_up_weights_at(trainer, epoch=5)
    trainer._loop()
    now = trainer.model.state_dict()
    for key, value in seen["weights"].items():
        if torch.is_tensor(value):
            assert torch.equal(now[key], value), key


def test_a_run_that_keeps_diverging_stops_with_one_sentence_and_keeps_its_best_model(xtb_ethanol_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="remul_ff")
    train = {"epochs": 12, "device": "cpu", "scheduler": "constant", "max_rollbacks": 2}
    trainer = Trainer(tiny_config(xtb_ethanol_file, tmp_path, train=train), progress=False)
    trainer.setup()
    train_epoch = trainer._train_epoch

    def always_diverging_after_four():
        if trainer.epoch >= 5:
            with torch.no_grad():
                for parameter in trainer.model.parameters():
                    parameter.mul_(1000.0)
        return train_epoch()

    trainer._train_epoch = always_diverging_after_four
    trainer._loop()
    out = caplog.text
    assert "stopping: the training loss diverged 2 time(s)" in out and "lower train.lr" in out
    assert trainer.epoch == 6  # epochs 5 and 6 spiked; no more budget spent on it
    best = min(read_log(tmp_path), key=lambda r: float(r["val_loss"]))
    assert int(best["epoch"]) <= 4
    assert (tmp_path / "model.pt").exists()


def test_a_run_with_a_learning_rate_far_too_high_is_caught_on_the_command_line(xtb_ethanol_file, tmp_path, capsys):
    """The real thing, no injected fault: AdamW at lr 1 sends the tiny model's loss to ~1e16 by epoch 4.

    Epochs 1-3 are the guard's history (already high: a run that diverges from its first epoch has no
    good level to compare with), then every spike rolls back and halves the step, and after
    ``max_rollbacks`` the run stops with one sentence instead of spending its 40 epochs.
    """
    from remul_ff.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\ndata: {{path: {xtb_ethanol_file}, valid: 8}}\n"
        "model: {width: 16, depth: 1, heads: 2}\n"
        "train: {epochs: 40, batch_size: 8, lr: 1.0, scheduler: constant, device: cpu, max_rollbacks: 3}\n"
    )
    assert main(["train", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("rolled back to the last good epoch") == 3
    assert "stopping: the training loss diverged 3 time(s)" in out
    rows = read_log(tmp_path / "run")
    assert len(rows) == 6  # not 40
    assert [float(r["lr"]) for r in rows] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25]  # logged before each epoch's rollback
    assert (tmp_path / "run" / "model.pt").exists()
