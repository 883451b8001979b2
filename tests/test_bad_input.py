"""Bad input on the command line: exit code 2, one sentence naming the bad value, no traceback, no file.

This is the start of issue 14's suite; each case is a mistake a new user made.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

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


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.batch_size=0", "'train.batch_size' must be at least 1, but is 0"),
        ("train.lr=0", "'train.lr' must be a positive number, but is 0"),
        ("train.epochs=-1", "'train.epochs' must be at least 1, but is -1"),
        ("train.ema_decay=1.5", "'train.ema_decay' must be in [0, 1)"),
        ("model.r_max=-3", "'model.r_max' must be a positive distance in Å, but is -3"),
        ("model.heads=7", "'model.width' (128) must be divisible by 'model.heads' (7)"),
        ("train.device=tpu", "unknown device 'tpu'"),
    ],
)
def test_train_rejects_bad_values_before_writing(xtb_ethanol_file, tmp_path, capsys, setting, message):
    config = tmp_path / "c.yaml"
    out = tmp_path / "run"
    config.write_text(f"output_dir: {out}\ndata: {{path: {xtb_ethanol_file}}}\n")
    assert main(["train", str(config), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def _ethanol(**changes):
    from ase.build import molecule

    atoms = molecule("CH3CH2OH")
    for name, value in changes.items():
        setattr(atoms, name, value)
    return atoms


def _coincident():
    atoms = _ethanol()
    atoms.positions[5] = atoms.positions[2] + 0.01
    return atoms


@pytest.mark.parametrize(
    "atoms, message",
    [
        (_ethanol(pbc=True, cell=[10, 10, 10]), "is periodic (pbc=[True, True, True])"),
        (_coincident(), "has atoms 2 (O) and 5 (H) only 0.0173 Å apart"),
    ],
)
def test_md_refuses_structures_it_cannot_simulate(trained_model_file, tmp_path, capsys, atoms, message):
    import ase.io

    structure, out = tmp_path / "start.xyz", tmp_path / "md"
    ase.io.write(structure, atoms)
    assert main(["md", str(trained_model_file), str(structure), "-o", str(out), "--time", "5fs"]) == 2
    err = capsys.readouterr().err
    assert message in err and "replica 0" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "atoms, message",
    [
        (_ethanol(pbc=True, cell=[10, 10, 10]), "set atoms.pbc = False"),
        (_coincident(), "atoms 2 (O) and 5 (H)"),
    ],
)
def test_calculator_refuses_structures_it_cannot_compute(trained_model_file, atoms, message):
    from remul_ff.errors import DataError
    from remul_ff.integrations import REMULCalculator

    atoms.calc = REMULCalculator(trained_model_file)
    with pytest.raises(DataError, match=re.escape(message)):
        atoms.get_forces()


def test_float32_far_from_the_origin_is_as_accurate_as_at_the_origin(trained_model_file):
    from remul_ff.integrations import REMULCalculator

    calc = REMULCalculator(trained_model_file, default_dtype="float32")
    near, far = _ethanol(), _ethanol()
    far.positions += 1e6
    energies = [calc.get_potential_energy(a) for a in (near, far)]
    forces = [calc.get_forces(a) for a in (near, far)]
    assert abs(energies[0] - energies[1]) < 1e-4  # 87 meV before the coordinates were centred
    np.testing.assert_allclose(forces[0], forces[1], atol=1e-4)


def _nan_first_weight(payload):
    name = next(k for k, v in payload["state_dict"].items() if torch.is_tensor(v) and v.is_floating_point())
    payload["state_dict"][name] = payload["state_dict"][name].clone().fill_(float("nan"))


def _truncate_last_weight(payload):
    name = [k for k, v in payload["state_dict"].items() if torch.is_tensor(v)][-1]
    payload["state_dict"][name] = payload["state_dict"][name][:1]


def _rename_first_weight(payload):
    name = next(iter(payload["state_dict"]))
    payload["state_dict"]["renamed." + name] = payload["state_dict"].pop(name)


MODEL_EDITS = [
    (lambda p: p.update(model_kind="mace"), "describes a model of kind 'mace'"),
    (lambda p: p["hyperparameters"].update(widht=64), "has a damaged model description (TypeError"),
    (lambda p: p.pop("elements"), "has a damaged model description (KeyError"),
    (lambda p: p.update(state_dict=None), "has no weights (state_dict)"),
    (_rename_first_weight, "1 missing, 1 unexpected, 0 of the wrong shape"),
    (_truncate_last_weight, "0 missing, 0 unexpected, 1 of the wrong shape"),
    (_nan_first_weight, "holds NaN or infinite weights"),
]


@pytest.mark.parametrize("edit, message", MODEL_EDITS)
def test_an_edited_model_file_is_refused_in_one_sentence(trained_model_file, xtb_ethanol_file, tmp_path, capsys, edit, message):
    from remul_ff.models.files import CHECKSUM_KEY, save_file

    payload = torch.load(trained_model_file, weights_only=True)
    del payload[CHECKSUM_KEY]
    edit(payload)
    edited, out = tmp_path / "edited.pt", tmp_path / "eval.json"
    save_file(payload, edited)  # with a checksum of the edited weights: the checks behind it must speak
    assert main(["evaluate", str(edited), str(xtb_ethanol_file), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


OUTPUTS = [("evaluate", False), ("generate", False), ("md", True), ("train", True)]  # (command, writes a folder)


def _command(name, target, model, data, tmp_path):
    if name == "evaluate":
        return ["evaluate", str(model), str(data), "--json", str(target)]
    if name == "generate":
        return ["generate", "ethanol", "-o", str(target), "--n-frames", "1"]
    if name == "md":
        return ["md", str(model), "ethanol", "-o", str(target), "--time", "1fs"]
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {target}\ndata: {{path: {data}}}\ntrain: {{epochs: 1}}\n")
    return ["train", str(config)]


@pytest.mark.parametrize("name, folder", OUTPUTS)
@pytest.mark.parametrize("problem", ["wrong kind", "parent is a file", "read-only"])
def test_unwritable_outputs_are_refused_before_any_work(trained_model_file, xtb_ethanol_file, tmp_path, capsys, name, folder, problem):
    import os

    if problem == "read-only" and os.geteuid() == 0:
        pytest.skip("root may write into read-only folders, so there is nothing to refuse")
    base = tmp_path / "out"
    base.mkdir()
    if problem == "wrong kind":
        target = base / "x"
        target.write_text("") if folder else target.mkdir()
        message = "is a file, but a folder is needed" if folder else "is a folder, but a file is needed"
    elif problem == "parent is a file":
        (base / "f").write_text("")
        target, message = base / "f" / "x", "cannot be created because"
    else:
        target, message = base / "x", "is not writable"
        base.chmod(0o555)
    before = sorted(p.name for p in base.iterdir())
    try:
        assert main(_command(name, target, trained_model_file, xtb_ethanol_file, tmp_path)) == 2
    finally:
        base.chmod(0o755)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in base.iterdir()) == before


@pytest.mark.parametrize(
    "content, message",
    [
        (bytes(range(256)), "is not text (byte 128 is not UTF-8)"),
        (b"- a\n- b\n", "holds a list, not a mapping of sections"),
        (b"output_dir: [unclosed\n", "is not valid YAML"),
    ],
)
def test_a_config_that_is_not_a_yaml_mapping_is_refused(tmp_path, capsys, content, message):
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
