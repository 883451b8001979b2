"""Issue 14's suite, continued: wrong data files, model files, specs and options of every command.

Each case asserts exit code 2, one line on stderr that names the problem (``fragment``), no
traceback, and no new or changed file in the working folder.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from remul_ff.cli import main


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _assert_refused(argv, fragment, capsys, folder):
    before = _snapshot(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(folder) == before


def _npz(folder, name, **changes):
    rng = np.random.default_rng(0)
    arrays = {"R": rng.random((5, 9, 3)), "F": rng.random((5, 9, 3)), "E": rng.random(5), "z": np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])}
    arrays.update(changes)
    np.savez(folder / name, **{k: v for k, v in arrays.items() if v is not None})
    return folder / name


def _nan_positions():
    positions = np.random.default_rng(0).random((5, 9, 3))
    positions[0, 0, 0] = np.nan
    return positions


DATA_FILES = [  # (file maker, what the sentence must say)
    (lambda d: _npz(d, "a.npz", F=np.zeros((4, 9, 3))), "array 'F' has shape (4, 9, 3)"),
    (lambda d: _npz(d, "b.npz", F=None), "lacks the keys ['F']"),
    (lambda d: _npz(d, "c.npz", z=np.array([6, 6, 8, 1, 1, 1, 1, 1, 0])), "holds 0, which is not an atomic number"),
    (lambda d: _npz(d, "d.npz", z=np.array([6, 6, 8, 1, 1, 1, 1, 1, 150])), "holds 150, which is not an atomic number"),
    (lambda d: _npz(d, "e.npz", z=np.array([6, 6, 8, 1, 1, 1, 1, 1, 16])), "the model was not trained on S"),
    (lambda d: _npz(d, "f.npz", R=_nan_positions()), "frame 0 of"),
    (lambda d: _npz(d, "g.npz", R=np.zeros((5, 9))), "array 'R' has shape (5, 9)"),
    (lambda d: _npz(d, "h.npz", E=np.zeros((5, 2))), "array 'E' has shape (5, 2)"),
    (lambda d: _npz(d, "i.npz", E=np.full(5, np.nan)), "has a NaN or infinite energy"),
    (lambda d: _write(d / "empty.xyz", b""), "Empty file"),
    (lambda d: _write(d / "garbage.xyz", b"hello world\nfoo\n"), "Expected xyz header"),
    (lambda d: _write(d / "noise.npz", bytes(range(100))), "could not read"),
    (lambda d: _write(d / "missing.xyz", None), "does not exist"),
]


def _write(path, content):
    if content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("make, fragment", DATA_FILES, ids=[f for _, f in DATA_FILES])
def test_evaluate_refuses_bad_data_files(make, fragment, trained_model_file, tmp_path, capsys):
    data = make(tmp_path)
    _assert_refused(["evaluate", str(trained_model_file), str(data), "--json", str(tmp_path / "out.json")], fragment, capsys, tmp_path)


def _unlabelled(folder):
    import ase.io
    from ase.build import molecule

    ase.io.write(folder / "nolabel.xyz", molecule("CH3CH2OH"))
    return folder / "nolabel.xyz"


EVALUATE_OPTIONS = [
    (lambda d: ["--index", "100:"], "contains no frames"),
    (lambda d: ["--index", "::0"], "slice step cannot be zero"),
    (lambda d: ["--format", "pdbx"], "unknown data format 'pdbx'"),
    (lambda d: ["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (lambda d: ["--dtype", "float16"], "invalid choice: 'float16'"),
    (lambda d: ["--energy-key", "foo"], "no 'foo' label"),
    (lambda d: ["--split", "valid"], "--split needs"),
]


@pytest.mark.parametrize("extra, fragment", EVALUATE_OPTIONS, ids=[f for _, f in EVALUATE_OPTIONS])
def test_evaluate_refuses_bad_options_on_good_data(extra, fragment, trained_model_file, xtb_ethanol_file, tmp_path, capsys):
    lone = tmp_path / "lone.pt"  # a model file without its run's splits.json beside it
    shutil.copy(trained_model_file, lone)
    _assert_refused(["evaluate", str(lone), str(xtb_ethanol_file), *extra(tmp_path)], fragment, capsys, tmp_path)


def test_evaluate_refuses_unlabelled_frames(trained_model_file, tmp_path, capsys):
    data = _unlabelled(tmp_path)
    _assert_refused(["evaluate", str(trained_model_file), str(data)], "has no 'energy' label", capsys, tmp_path)


def _torch_save(path, obj):
    import torch

    torch.save(obj, path)
    return path


MODEL_FILES = [
    (lambda d: d / "none.pt", "does not exist"),
    (lambda d: _write(d / "junk.pt", bytes(range(256)) * 2), "is not a readable remul-ff file"),
    (lambda d: _write(d / "empty.pt", b""), "is not a readable remul-ff file (EOFError)"),
    (lambda d: _write(d / "frames.xyz", b"1\n\nH 0 0 0\n"), "is not a readable remul-ff file"),
    (lambda d: (d / "run").mkdir() or d / "run", "is a folder; give the path of a file inside it"),
    (lambda d: _torch_save(d / "dict.pt", {"a": 1}), "not a 'remul-ff-model' file"),
    (lambda d: _torch_save(d / "list.pt", [1, 2]), "is a 'list' file, not a 'remul-ff-model' file"),
    (
        lambda d: _checkpoint(d / "stopped", finished=False),
        "checkpoint.pt is a training checkpoint, not a model file; training writes model.pt beside it",
    ),
    (lambda d: _checkpoint(d / "ended", finished=True), "ended/checkpoint.pt is a training checkpoint, not a model file; use "),
]


def _checkpoint(run_folder, finished: bool):
    """A training run's checkpoint.pt, with the model.pt of a finished run beside it."""
    run_folder.mkdir()
    if finished:
        (run_folder / "model.pt").write_bytes(b"")
    return _torch_save(run_folder / "checkpoint.pt", {"kind": "remul-ff-checkpoint", "format_version": 1})


@pytest.mark.parametrize("command", ["evaluate", "md", "export"])
@pytest.mark.parametrize("make, fragment", MODEL_FILES, ids=[f for _, f in MODEL_FILES])
def test_every_command_refuses_a_bad_model_file(command, make, fragment, xtb_ethanol_file, tmp_path, capsys):
    model = make(tmp_path)
    argv = {
        "evaluate": ["evaluate", str(model), str(xtb_ethanol_file)],
        "md": ["md", str(model), "ethanol", "-o", str(tmp_path / "md"), "--time", "1fs"],
        "export": ["export", str(model), "-o", str(tmp_path / "m.pt2")],
    }[command]
    _assert_refused(argv, fragment, capsys, tmp_path)


MD_STARTS = [  # (structure argument, extra options, what the sentence must say)
    ("CH3SH", [], "the model was not trained on S"),
    ("notamolecule", [], "'notamolecule' is neither a file nor a molecule name"),
    ("ethanol", ["--committee", "none.pt"], "none.pt does not exist"),
    ("ethanol", ["--max-force-deviation", "0.1"], "--max-force-deviation needs a committee"),
    ("ethanol", ["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
    ("ethanol", ["--replicas", "abc"], "argument --replicas: invalid int value: 'abc'"),
    ("ethanol", ["--thermostat", "berendsen"], "invalid choice: 'berendsen'"),
    ("ethanol", ["--resume"], "--resume found no"),
    ("ethanol", ["--timestep", "5", "--time", "1fs"], "the total time (1 fs) is shorter than one time step (5 fs)"),
]


@pytest.mark.parametrize("structure, extra, fragment", MD_STARTS, ids=[f for _, _, f in MD_STARTS])
def test_md_refuses_before_starting(structure, extra, fragment, trained_model_file, tmp_path, capsys):
    argv = ["md", str(trained_model_file), structure, "-o", str(tmp_path / "md"), "--no-progress"]
    argv += extra if "--time" in extra else ["--time", "1fs", *extra]
    _assert_refused(argv, fragment, capsys, tmp_path)


def test_md_refuses_a_committee_threshold_below_zero(trained_model_file, tmp_path, capsys):
    argv = [
        "md",
        str(trained_model_file),
        "ethanol",
        "-o",
        str(tmp_path / "md"),
        "--time",
        "1fs",
        "--committee",
        str(trained_model_file),
        "--max-force-deviation",
        "-1",
    ]
    _assert_refused(argv, "threshold (eV/Å) must be a positive number, but is -1.0", capsys, tmp_path)


@pytest.fixture(scope="module")
def finished_md_run(trained_model_file, tmp_path_factory):
    """A 2 fs MD run of one ethanol in float32 with restart files."""
    out = tmp_path_factory.mktemp("md") / "run"
    assert (
        main(
            [
                "md",
                str(trained_model_file),
                "ethanol",
                "-o",
                str(out),
                "--time",
                "2fs",
                "--restart-every",
                "1",
                "--dtype",
                "float32",
                "--no-progress",
            ]
        )
        == 0
    )
    return out


RESUMES = [  # (structure, options, what the sentence must say)
    ("ethanol", ["--replicas", "3"], "1 replicas then, 3 now"),
    ("CH3OH", [], "replica 0 was C2H6O, now CH4O"),
    ("ethanol", ["--thermostat", "nve"], "thermostat was 'langevin' but is 'nve' now"),
    ("ethanol", ["--timestep", "0.25"], "timestep_fs was 0.5 but is 0.25 now"),
    ("ethanol", ["--temperature", "500"], "temperature was 300.0 but is 500.0 now"),
    ("ethanol", ["--dtype", "float64"], "it ran in float32, but --dtype is float64 now"),
    ("ethanol", ["--time", "1fs"], "it has already simulated 0.002 ps per replica, more than the 0.001 ps asked for"),
    ("ethanol", ["--overwrite"], "--resume and --overwrite contradict each other"),
]


@pytest.mark.parametrize("structure, extra, fragment", RESUMES, ids=[f for _, _, f in RESUMES])
def test_md_resume_refuses_a_different_run(structure, extra, fragment, trained_model_file, finished_md_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_md_run, out)
    argv = ["md", str(trained_model_file), structure, "-o", str(out), "--resume", "--no-progress", "--dtype", "float32"]
    argv += extra if "--time" in extra else ["--time", "4fs", *extra]
    _assert_refused(argv, fragment, capsys, tmp_path)


def test_md_resume_refuses_a_damaged_restart_file(trained_model_file, finished_md_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_md_run, out)
    (out / "restart.pt").write_bytes(b"xx")
    argv = ["md", str(trained_model_file), "ethanol", "-o", str(out), "--resume", "--time", "4fs", "--dtype", "float32"]
    _assert_refused(argv, "restart.pt is not a readable remul-ff file", capsys, tmp_path)


COMPARE_SPECS = [  # (spec after the data line, extra arguments, what the sentence must say)
    ("models: {}\n", [], "names no models"),
    ("models: {a: 3}\n", [], "models.a must be a mapping of config sections (or model_path), but is 3"),
    ("models: [a, b]\n", [], "config key 'models' expects mapping"),
    (
        "models: {a: {kind: egnn}}\n",
        [],
        "unknown config key 'models.a.kind'; valid keys are output_dir, data, model, loss, train, model_path, md, committee.",
    ),
    ("models: {a: {modle: {kind: egnn}}}\n", [], "unknown config key 'models.a.modle'; did you mean 'models.a.model'?"),
    ("models: {a: {model: {kind: foo}}}\n", [], "models.a: config key 'model.kind' must be one of transformer, egnn, but got 'foo'"),
    ("models: {a: {model_path: none.pt}}\n", [], "none.pt does not exist"),
    ("models: {a: {model: {kind: egnn}}}\nmd: {replicas: 0}\n", [], "config key 'md.replicas' must be at least 1, but is 0"),
    (
        "models: {a: {model: {kind: egnn}}}\nmd: {thermostat: berendsen}\n",
        [],
        "'md.thermostat' must be one of nve, langevin, nose-hoover, but got 'berendsen'",
    ),
    ("models: {a: {model: {kind: egnn}}}\nmd: {time: 3 parsecs}\n", [], "cannot read the duration '3 parsecs'"),
    ("models: {a: {model: {kind: egnn}}}\nmd: {temprature: 300}\n", [], "did you mean 'md.temperature'?"),
    (
        "models: {a: {model: {kind: egnn}}}\nmd: {dtype: float16}\n",
        [],
        "'md.dtype' must be one of float64, float32, but got 'float16'",
    ),
    ("models: {a: {model: {kind: egnn}}}\n", ["--model", "zzz"], "the spec has no model named 'zzz'; it names a"),
    ("models: {a: {model: {kind: egnn}}}\n", ["--update-report"], "--update-report needs --model NAME"),
    ("models: {a: {model: {kind: egnn}}}\n", ["--set", "md.timestep_fs=0"], "config key 'md.timestep_fs' must be a positive number"),
]


@pytest.mark.parametrize("body, extra, fragment", COMPARE_SPECS, ids=[f for _, _, f in COMPARE_SPECS])
def test_compare_refuses_bad_specs(body, extra, fragment, xtb_ethanol_file, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"output_dir: {tmp_path / 'out'}\ndata: {{path: {xtb_ethanol_file}}}\n{body}")
    _assert_refused(["compare", str(spec), *extra], fragment, capsys, tmp_path)


SCALING_BASE = "budgets: [1]\nsizes: {transformer: {S: {width: 16, depth: 1, heads: 2}}}\nfamilies: {a: {model: {kind: transformer}}}\n"

SCALING_SPECS = [  # (replacement in SCALING_BASE, extra arguments, what the sentence must say)
    (("", ""), ["--shard", "3/2"], "--shard 3/2: K must be between 1 and N"),
    (("", ""), ["--shard", "x"], "--shard must look like K/N"),
    (("", ""), ["--report-only"], "no finished cpu point"),
    (("", ""), ["--device", "tpu"], "unknown device 'tpu'"),
    (("budgets: [1]", "budgets: [0]"), [], "budgets must be whole numbers of epochs, at least 1, but are [0]"),
    (("budgets: [1]", "budgets: [a]"), [], "but are ['a']"),
    (("kind: transformer}}}", "kind: egnn}}}"), [], "lists no sizes.egnn"),
    (("heads: 2", "heads: 3"), [], "family 'a', size 'S': config key 'model.width' (16) must be divisible by 'model.heads' (3)"),
    (("{kind: transformer}}}", "{kind: transformer}, train: {lr: 1}}}"), [], "may hold only 'model' and 'loss', not train"),
    (("budgets: [1]", "budgets: [1]\ncolours: red"), [], "unknown config key 'colours'"),
    (("families: {a: {model: {kind: transformer}}}", "families: {}"), [], "needs at least one family"),
]


@pytest.mark.parametrize("change, extra, fragment", SCALING_SPECS, ids=[f for _, _, f in SCALING_SPECS])
def test_scaling_refuses_bad_specs(change, extra, fragment, xtb_ethanol_file, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"output_dir: {tmp_path / 'out'}\ndata: {{path: {xtb_ethanol_file}}}\n" + SCALING_BASE.replace(*change))
    _assert_refused(["scaling", str(spec), *extra], fragment, capsys, tmp_path)


COMMAND_LINES = [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: command"),
    (["train"], "the following arguments are required: config"),
    (["md", "model.pt", "ethanol"], "the following arguments are required: -o/--output"),
    (["generate", "ethanol", "-o", "x.xyz", "--method", "GFN9"], "unrecognized arguments: --method GFN9"),
    (["export", "model.pt", "-o", "x.txt"], "should end in .pt2"),
    (["export", "model.pt", "-o", "x.pt2", "--dtype", "float16"], "invalid choice: 'float16'"),
]


@pytest.mark.parametrize("argv, fragment", COMMAND_LINES, ids=[f for _, f in COMMAND_LINES])
def test_wrong_command_lines_get_one_line_not_the_usage_block(argv, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _assert_refused(argv, fragment, capsys, tmp_path)
    assert os.listdir(tmp_path) == []
