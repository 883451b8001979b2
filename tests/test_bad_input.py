"""Bad input on the command line: exit code 2, one sentence naming the bad value, no traceback, no file.

This is the start of issue 14's suite; each case is a mistake a new user made.
"""

from __future__ import annotations

import pytest

from remul_ff.cli import main

EVALUATE_CASES = [
    (["--index", "abc"], "cannot read the frame index 'abc'"),
    (["--rotations", "-3"], "--rotations must be 0 or more"),
    (["--batch-size", "0"], "--batch-size at least 1"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cuda:7"], "device 'cuda:7'"),
]


@pytest.mark.parametrize("extra, message", EVALUATE_CASES)
def test_evaluate_rejects_bad_options(trained_model_file, xtb_ethanol_file, tmp_path, capsys, extra, message):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(trained_model_file), str(xtb_ethanol_file), "--json", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


GENERATE_CASES = [
    (["--temperature", "-50"], "--temperature must be a positive number of K, but is -50.0."),
    (["--temperature", "nan"], "--temperature must be a positive number of K, but is nan."),
    (["--timestep", "0"], "--timestep must be a positive number of fs, but is 0.0."),
    (["--n-frames", "0"], "--n-frames and --sample-every must be at least 1"),
    (["--equilibration", "-1"], "--equilibration 0 or more"),
]


@pytest.mark.parametrize("extra, message", GENERATE_CASES)
def test_generate_rejects_bad_options(tmp_path, capsys, extra, message):
    out = tmp_path / "frames.xyz"
    assert main(["generate", "ethanol", "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("setting, message", [
    ("train.batch_size=0", "'train.batch_size' must be at least 1, but is 0"),
    ("train.lr=0", "'train.lr' must be a positive number, but is 0"),
    ("train.epochs=-1", "'train.epochs' must be at least 1, but is -1"),
    ("train.ema_decay=1.5", "'train.ema_decay' must be in [0, 1)"),
    ("model.r_max=-3", "'model.r_max' must be a positive distance in Å, but is -3"),
    ("model.heads=7", "'model.width' (128) must be divisible by 'model.heads' (7)"),
    ("train.device=tpu", "unknown device 'tpu'"),
])
def test_train_rejects_bad_values_before_writing(xtb_ethanol_file, tmp_path, capsys, setting, message):
    config = tmp_path / "c.yaml"
    out = tmp_path / "run"
    config.write_text(f"output_dir: {out}\ndata: {{path: {xtb_ethanol_file}}}\n")
    assert main(["train", str(config), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
