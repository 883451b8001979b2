"""Trainer behaviour: REMUL lowers the equivariance error, GradNorm stays normalised, checkpoints
round-trip, and --resume continues exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from remul_ff.cli import main
from remul_ff.config import config_from_dict
from remul_ff.models import load_model, predict
from remul_ff.training.evaluate import evaluate, iterate_batches
from remul_ff.training.trainer import Trainer

TINY_MODEL = {"kind": "transformer", "width": 16, "depth": 1, "heads": 2, "r_max": 4.0, "num_radial": 6}


def tiny_config(data_path, out, **sections):
    values = {
        "output_dir": str(out),
        "data": {"path": str(data_path), "valid": 8},
        "model": dict(TINY_MODEL),
        "loss": {},
        "train": {"epochs": 3, "batch_size": 8, "lr": 3e-3, "ema_decay": 0.9, "eval_rotations": 2},
    }
    for name, extra in sections.items():
        values[name].update(extra)
    return config_from_dict(values)


def read_log(out):
    return list(csv.DictReader(open(out / "log.csv")))


def final_equivariance(config) -> float:
    trainer = Trainer(config, progress=False)
    trainer.run()
    return evaluate(trainer.model, trainer.data.valid, trainer.data.e0s, n_rotations=8, device=trainer.device, dtype=torch.float32)[
        "equi_forces_rel"
    ]


def test_remul_lowers_equivariance_error_more_than_none(xtb_ethanol_file, tmp_path):
    """All training frames share one orientation, so only the REMUL loss teaches rotations.

    Measured when written (seeds 1-3): REMUL ends at 0.24-0.30x the relative force
    equivariance error of the `none` mode after 200 steps; a REMUL loss that did nothing gives ~1x.
    """
    train = {"epochs": 20, "ema_decay": 0.0, "batch_size": 4, "seed": 1}
    untrained = Trainer(tiny_config(xtb_ethanol_file, tmp_path / "u", train=train), progress=False)
    untrained.out.mkdir(parents=True)
    untrained.data = untrained._prepare_data()
    untrained._build()  # the same seeded initial weights, never trained
    initial = evaluate(
        untrained.model, untrained.data.valid, untrained.data.e0s, n_rotations=8, device=untrained.device, dtype=torch.float32
    )["equi_forces_rel"]
    remul = final_equivariance(tiny_config(xtb_ethanol_file, tmp_path / "r", train=train))
    none = final_equivariance(tiny_config(xtb_ethanol_file, tmp_path / "n", train=train, loss={"mode": "none"}))
    assert remul < 0.5 * initial
    assert remul < 0.6 * none


def test_gradnorm_keeps_weights_normalised_and_adapts_them(xtb_ethanol_file, tmp_path):
    config = tiny_config(xtb_ethanol_file, tmp_path, loss={"weighting": "gradnorm", "alpha": 1.0, "beta": 3.0})
    trainer = Trainer(config, progress=False)
    trainer.run()
    rows = read_log(tmp_path)
    assert len(rows) == 3
    for row in rows:
        assert float(row["alpha"]) + float(row["beta"]) == pytest.approx(2.0, abs=1e-9)
    assert float(rows[-1]["alpha"]) != pytest.approx(0.5, abs=1e-3)  # moved away from 2 * 1/(1+3)


@pytest.mark.parametrize("mode", ["augment", "none"])
def test_ablation_modes_train_on_the_same_code_path(xtb_ethanol_file, tmp_path, mode):
    Trainer(tiny_config(xtb_ethanol_file, tmp_path, loss={"mode": mode}, train={"epochs": 2}), progress=False).run()
    rows = read_log(tmp_path)
    assert float(rows[-1]["train_equi"]) == 0.0 and float(rows[-1]["train_loss"]) > 0


def test_exported_model_round_trips_with_weights_only(xtb_ethanol_file, tmp_path):
    trainer = Trainer(tiny_config(xtb_ethanol_file, tmp_path, train={"epochs": 2, "ema_decay": 0.0}), progress=False)
    trainer.run()
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["format_version"] == 1 and payload["elements"] == [1, 6, 8]
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    loaded = load_model(tmp_path / "model.pt", device=trainer.device, dtype=torch.float32)
    batch = next(iterate_batches(trainer.data.valid, 8, trainer.device, torch.float32))
    best_epoch = min(read_log(tmp_path), key=lambda r: float(r["val_loss"]))["epoch"]
    if best_epoch == "2":  # model.pt holds the best epoch; compare when that is the last one
        assert torch.allclose(predict(loaded, batch).forces, predict(trainer.model, batch).forces, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_resume_continues_exactly(xtb_ethanol_file, tmp_path):
    """Bitwise equality needs deterministic kernels: on CUDA, index_add_ sums in varying order."""
    gradnorm, train = {"weighting": "gradnorm"}, {"epochs": 4, "device": "cpu"}
    straight = Trainer(tiny_config(xtb_ethanol_file, tmp_path / "a", loss=gradnorm, train=train), progress=False)
    straight.run()

    interrupted = Trainer(tiny_config(xtb_ethanol_file, tmp_path / "b", loss=gradnorm, train=train), progress=False)

    def kill_after_two(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    interrupted.epoch_end_hooks.append(kill_after_two)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    resumed = Trainer(tiny_config(xtb_ethanol_file, tmp_path / "b", loss=gradnorm, train=train), progress=False)
    resumed.run(resume=True)
    for key, value in straight.model.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [r["epoch"] for r in read_log(tmp_path / "b")] == ["1", "2", "3", "4"]
    assert read_log(tmp_path / "a")[-1]["val_loss"] == read_log(tmp_path / "b")[-1]["val_loss"]


def test_cli_train_then_evaluate(xtb_ethanol_file, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\ndata: {{path: {xtb_ethanol_file}, valid: 8}}\n"
        "model: {width: 16, depth: 1, heads: 2}\ntrain: {epochs: 1, batch_size: 8}\n"
    )
    assert main(["train", str(config), "--no-progress", "--set", "loss.mode=augment"]) == 0
    summary = capsys.readouterr().out
    assert "best model (epoch 1 of 1) written to" in summary and "force MAE" in summary and "next: remul-ff evaluate" in summary
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "run" / "model.pt"),
                str(xtb_ethanol_file),
                "--rotations",
                "4",
                "--json",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "forces on C" in out and "Shen et al." in out and (tmp_path / "eval.json").exists()


def test_cli_rejects_corrupt_model_and_unknown_elements(xtb_ethanol_file, tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(bad), str(xtb_ethanol_file)]) == 2
    assert "may be corrupt" in capsys.readouterr().err
    Trainer(tiny_config(xtb_ethanol_file, tmp_path / "run", train={"epochs": 1}), progress=False).run()
    water_n = tmp_path / "nh3.xyz"
    from remul_ff.data.generate import write_extxyz
    from tests.helpers import jittered_molecules, xtb_labelled

    write_extxyz(xtb_labelled(jittered_molecules("NH3", 2)), water_n)
    assert main(["evaluate", str(tmp_path / "run" / "model.pt"), str(water_n), "--json", str(tmp_path / "e.json")]) == 2
    assert "not trained on N; it knows only H, C, O" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def test_resume_without_checkpoint_is_a_clear_error(xtb_ethanol_file, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\ndata: {{path: {xtb_ethanol_file}, valid: 8}}\n")
    assert main(["train", str(config), "--resume"]) == 2
    assert "start the run without --resume" in capsys.readouterr().err


def test_tensorboard_mirror_when_installed(xtb_ethanol_file, tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard is an optional extra: pip install 'remul-ff[tensorboard]'")
    Trainer(tiny_config(xtb_ethanol_file, tmp_path, train={"epochs": 1}), progress=False).run()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def _small_run_config(tmp_path, data_file, extra: str = "") -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\ndata: {{path: {data_file}, valid: 8}}\n"
        f"model: {{width: 16, depth: 1, heads: 2}}\ntrain: {{epochs: 1, batch_size: 8{extra}}}\n"
    )
    return config


def test_train_refuses_to_overwrite_a_run_unless_told(xtb_ethanol_file, tmp_path, capsys):
    config = _small_run_config(tmp_path, xtb_ethanol_file)
    assert main(["train", str(config), "--no-progress"]) == 0
    model = (tmp_path / "run" / "model.pt").read_bytes()
    assert main(["train", str(config), "--no-progress", "--set", "train.lr=0.01"]) == 2
    assert "already holds a training run (config.yaml, log.csv, checkpoint.pt, model.pt); pass --resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.pt").read_bytes() == model
    assert main(["train", str(config), "--no-progress", "--overwrite", "--set", "train.lr=0.01"]) == 0
    assert (tmp_path / "run" / "model.pt").read_bytes() != model
    assert main(["train", str(config), "--resume", "--overwrite"]) == 2


def test_resume_refuses_a_changed_model_or_data_section(xtb_ethanol_file, tmp_path, capsys):
    config = _small_run_config(tmp_path, xtb_ethanol_file)
    assert main(["train", str(config), "--no-progress"]) == 0
    log = (tmp_path / "run" / "log.csv").read_text()
    assert main(["train", str(config), "--resume", "--set", "model.width=32"]) == 2
    assert "cannot resume: model.width is 32 now but was 16" in capsys.readouterr().err
    assert main(["train", str(config), "--resume", "--set", "data.valid=4"]) == 2
    assert "cannot resume: data.valid is 4 now but was 8" in capsys.readouterr().err
    assert (tmp_path / "run" / "log.csv").read_text() == log


def test_resume_accepts_a_run_saved_before_a_key_was_added(xtb_ethanol_file, tmp_path, capsys):
    import yaml

    config = _small_run_config(tmp_path, xtb_ethanol_file)
    assert main(["train", str(config), "--no-progress"]) == 0
    saved = tmp_path / "run" / "config.yaml"
    values = yaml.safe_load(saved.read_text())
    del values["data"]["max_frames"], values["model"]["radial_basis"]  # as written by an older remul-ff
    saved.write_text(yaml.safe_dump(values))
    assert main(["train", str(config), "--resume", "--no-progress", "--set", "train.epochs=3"]) == 0, capsys.readouterr().err


def test_resume_after_the_time_budget_trains_for_another_budget(xtb_ethanol_file, tmp_path, capsys):
    config = _small_run_config(tmp_path, xtb_ethanol_file, ", epochs: 100, max_minutes: 0.0001")
    assert main(["train", str(config), "--no-progress"]) == 0
    assert [r["epoch"] for r in read_log(tmp_path / "run")] == ["1"]
    assert main(["train", str(config), "--no-progress", "--resume"]) == 0
    assert "continuing for another 0.0001 minutes" in capsys.readouterr().out
    assert [r["epoch"] for r in read_log(tmp_path / "run")] == ["1", "2"]


def test_a_failed_fresh_run_leaves_no_folder(tmp_path, capsys, ethanol_structures):
    from remul_ff.data.generate import write_extxyz

    data = tmp_path / "data.xyz"
    write_extxyz(ethanol_structures, data)
    config = _small_run_config(tmp_path, data)
    assert main(["train", str(config), "--no-progress", "--set", "data.valid=2", "--set", f"data.e0s={tmp_path / 'missing.xyz'}"]) == 2
    assert "missing.xyz" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").write_text("a file")
    assert main(["train", str(config), "--no-progress"]) == 2
    assert "is a file, but a folder is needed" in capsys.readouterr().err


def test_evaluate_split_uses_the_runs_splits(xtb_ethanol_file, tmp_path, capsys):
    import json

    config = _small_run_config(tmp_path, xtb_ethanol_file)
    assert main(["train", str(config), "--no-progress"]) == 0
    model = tmp_path / "run" / "model.pt"
    assert (
        main(["evaluate", str(model), str(xtb_ethanol_file), "--split", "valid", "--rotations", "0", "--json", str(tmp_path / "v.json")])
        == 0
    )
    assert json.loads((tmp_path / "v.json").read_text())["n_structures"] == 8
    assert main(["evaluate", str(model), str(xtb_ethanol_file), "--split", "test"]) == 2
    assert "the test split in" in capsys.readouterr().err
    assert main(["evaluate", str(model), str(xtb_ethanol_file), "--split", "valid", "--index", ":3"]) == 2
    assert "pass only one of them" in capsys.readouterr().err
