"""Config parsing: typed sections, and one clear message per mistake."""

from __future__ import annotations

import pytest

from remul_ff.cli import main
from remul_ff.config import apply_overrides, config_from_dict, load_config
from remul_ff.errors import ConfigError


def test_valid_config_is_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {path: x.xyz, valid: 50}\nmodel: {kind: transformer, width: 32, heads: 4}\ntrain: {lr: 1}\n")
    config = load_config(path, ["loss.weighting=gradnorm", "train.epochs=7"])
    assert config.data.valid == 50 and config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.model["width"] == 32 and config.model["depth"] == 3 and config.model_kind == "transformer"
    assert config.loss.weighting == "gradnorm" and config.train.epochs == 7


@pytest.mark.parametrize(
    "values,message",
    [
        ({"train": {"batchsize": 8}}, "unknown config key 'train.batchsize'; did you mean 'train.batch_size'"),
        ({"trian": {}}, "unknown config key 'trian'; did you mean 'train'"),
        ({"model": {"widht": 8}}, "unknown config key 'model.widht'; did you mean 'model.width'"),
        ({"train": {"epochs": "ten"}}, "config key 'train.epochs' expects int, but got 'ten' \\(str\\)"),
        ({"train": {"epochs": 2.5}}, "config key 'train.epochs' expects int, but got 2.5 \\(float\\)"),
        ({"train": {"lr": True}}, "config key 'train.lr' expects float, but got True \\(bool\\)"),
        ({"data": {"valid": "a lot"}}, "config key 'data.valid' expects int or float, but got 'a lot'"),
        ({"loss": {"mode": "remull"}}, "config key 'loss.mode' must be one of remul, augment, none, but got 'remull'"),
        ({"model": {"kind": "mace"}}, "config key 'model.kind' must be one of"),
        ({"data": [1, 2]}, "config section 'data' must be a mapping"),
        ({"train": {"batch_size": 0}}, "config key 'train.batch_size' must be at least 1, but is 0"),
        ({"train": {"batch_size": -4}}, "config key 'train.batch_size' must be at least 1, but is -4"),
        ({"train": {"lr": 0}}, "config key 'train.lr' must be a positive number, but is 0.0"),
        ({"train": {"lr": -1e-3}}, "config key 'train.lr' must be a positive number"),
        ({"train": {"epochs": 0}}, "config key 'train.epochs' must be at least 1, but is 0"),
        ({"train": {"epochs": -1}}, "config key 'train.epochs' must be at least 1"),
        ({"train": {"ema_decay": 1.5}}, "config key 'train.ema_decay' must be in \\[0, 1\\)"),
        ({"train": {"max_minutes": 0}}, "config key 'train.max_minutes' must be a positive number of minutes"),
        ({"data": {"max_frames": -5}}, "config key 'data.max_frames' must be at least 1 or null, but is -5"),
        ({"model": {"r_max": 0}}, "config key 'model.r_max' must be a positive distance"),
        ({"model": {"r_max": -3}}, "config key 'model.r_max' must be a positive distance"),
        ({"model": {"width": 30, "heads": 8}}, "'model.width' \\(30\\) must be divisible by 'model.heads' \\(8\\); try width 24"),
        ({"loss": {"forces_weight": -1}}, "config key 'loss.forces_weight' must be a number >= 0"),
    ],
)
def test_each_config_error_names_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_bad_override_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides({}, ["train.epochs"])
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epochs: [1,\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)


def test_cli_config_error_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\ntrain: {{epohcs: 3}}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'train.epochs'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_floats_written_as_users_write_them_are_floats(tmp_path):
    """PyYAML reads '1e-3' (no dot) as a string; a user writes it that way in YAML and in --set."""
    import yaml

    values = yaml.safe_load("train: {lr: 1e-3, weight_decay: 5E-7}\nloss: {forces_weight: 1e2}")
    config = config_from_dict(apply_overrides(values, ["train.clip_grad_norm=2e1"]))
    assert (config.train.lr, config.train.weight_decay, config.loss.forces_weight, config.train.clip_grad_norm) == (1e-3, 5e-7, 100.0, 20.0)
    with pytest.raises(ConfigError, match="expects float"):
        config_from_dict({"train": {"lr": "fast"}})


def test_loss_weights_that_train_nothing_are_one_sentence():
    from remul_ff.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="'loss.energy_weight' and 'loss.forces_weight' are both 0"):
        config_from_dict({"loss": {"energy_weight": 0, "forces_weight": 0}})
    with pytest.raises(ConfigError, match="'loss.stage_two_energy_weight' and 'loss.stage_two_forces_weight' are both 0"):
        config_from_dict({"loss": {"stage_two_fraction": 0.2, "stage_two_energy_weight": 0, "stage_two_forces_weight": 0}})
    config_from_dict({"loss": {"energy_weight": 0, "forces_weight": 0}, "model": {"direct_forces": True}})  # the head still learns
