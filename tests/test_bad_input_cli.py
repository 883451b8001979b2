"""Issue 14's suite, continued: many wrong values on the command line, each refused the same way.

Every case asserts exit code 2, one line on stderr that names the bad value (``fragment``), no
traceback, and no file or folder left in the working folder.
"""

from __future__ import annotations

import pytest

from remul_ff.cli import main

TRAIN_SETTINGS = [  # (--set KEY=VALUE, what the sentence must say)
    ("train.epochs=0", "'train.epochs' must be at least 1, but is 0"),
    ("train.batch_size=-4", "'train.batch_size' must be at least 1, but is -4"),
    ("train.lr=-0.001", "'train.lr' must be a positive number, but is -0.001"),
    ("train.lr=.nan", "'train.lr' must be a positive number, but is nan"),
    ("train.weight_decay=-1", "'train.weight_decay' must be a number >= 0"),
    ("train.ema_decay=1.0", "'train.ema_decay' must be in [0, 1)"),
    ("train.min_lr_ratio=2", "'train.min_lr_ratio' must be in [0, 1], but is 2.0"),
    ("train.clip_grad_norm=-1", "'train.clip_grad_norm' must be a number >= 0"),
    ("train.patience=0", "'train.patience' must be at least 1, but is 0"),
    ("train.max_minutes=0", "'train.max_minutes' must be a positive number of minutes or null, but is 0.0"),
    ("train.max_minutes=-5", "'train.max_minutes' must be a positive number of minutes or null, but is -5.0"),
    ("train.eval_rotations=-1", "'train.eval_rotations' must be 0 or more, but is -1"),
    ("train.checkpoint_every=0", "'train.checkpoint_every' must be at least 1, but is 0"),
    ("train.num_threads=0", "'train.num_threads' must be at least 1 or null, but is 0"),
    ("data.max_frames=0", "'data.max_frames' must be at least 1 or null, but is 0"),
    ("data.max_frames=1", "holds 1 labelled frame; training needs at least 2"),
    ("data.valid=0", "the validation split is empty (data.valid = 0 of 48 frames); set data.valid to a count of at least 1"),
    ("data.valid=0.001", "the validation split is empty (data.valid = 0.001 of 48 frames)"),
    ("loss.energy_weight=-1", "'loss.energy_weight' must be a number >= 0, but is -1.0"),
    ("loss.forces_weight=.inf", "'loss.forces_weight' must be a number >= 0, but is inf"),
    ("loss.alpha=-1", "'loss.alpha' must be a number >= 0, but is -1.0"),
    ("loss.beta=.nan", "'loss.beta' must be a number >= 0, but is nan"),
    ("loss.gradnorm_lr=-1", "'loss.gradnorm_lr' must be a positive number, but is -1.0"),
    ("loss.gradnorm_restoring=-1", "'loss.gradnorm_restoring' must be a number >= 0, but is -1.0"),
    ("model.r_max=0", "'model.r_max' must be a positive distance in Å, but is 0.0"),
    ("model.width=0", "'model.width' must be at least 1, but is 0"),
    ("model.depth=0", "'model.depth' must be at least 1, but is 0"),
    ("model.heads=0", "'model.heads' must be at least 1, but is 0"),
    ("model.num_radial=0", "'model.num_radial' must be at least 1, but is 0"),
    ("model.envelope_p=0", "'model.envelope_p' must be at least 1"),
    ("model.ffn_multiplier=0", "'model.ffn_multiplier' must be at least 1, but is 0"),
    ("model.edge_width=-8", "'model.edge_width' must be at least 1 or null, but is -8"),
    ("model.radial_basis=fourier", "'model.radial_basis' must be one of"),
    ("train.epochs=ten", "'train.epochs' expects int, but got 'ten' (str)"),
    ("train.lr=fast", "'train.lr' expects float, but got 'fast' (str)"),
    ("train.seed=1.5", "'train.seed' expects int, but got 1.5 (float)"),
    ("data.split_seed=abc", "'data.split_seed' expects int, but got 'abc' (str)"),
    ("train.batchsize=8", "unknown config key 'train.batchsize'; did you mean 'train.batch_size'?"),
    ("model.kind=mace", "'model.kind' must be one of transformer, egnn, but got 'mace'"),
    ("loss.mode=equivariant", "'loss.mode' must be one of remul, augment, none, but got 'equivariant'"),
    ("loss.weighting=adaptive", "'loss.weighting' must be one of fixed, gradnorm, but got 'adaptive'"),
    ("loss.target=nothing", "'loss.target' must be one of label, prediction, but got 'nothing'"),
    ("train.scheduler=linear", "'train.scheduler' must be one of cosine, plateau, constant, but got 'linear'"),
    ("train.dtype=float16", "'train.dtype' must be one of float32, float64, but got 'float16'"),
    ("train.device=cuda:3", "device 'cuda:3'"),
    ("data.path=/nonexistent/data.xyz", "data file /nonexistent/data.xyz does not exist"),
    ("data.format=pdbx", "unknown data format 'pdbx'"),
    ("data.valid=2.5", "validation size 2.5 must be a fraction in [0, 1) or a non-negative whole count"),
    ("data.valid=-3", "validation size -3 must be a fraction"),
    ("data.train=-3", "training size -3 must be a fraction"),
    ("data.energy_key=dft_energy", "no 'dft_energy' label"),
    ("data.e0s=/missing/e0s.xyz", "/missing/e0s.xyz"),
    ("data.off_equilibrium.fraction=-1", "data.off_equilibrium.fraction must be a finite number >= 0, but is -1.0"),
    ("data.off_equilibrium.max_energy=.nan", "data.off_equilibrium.max_energy must be a finite number >= 0, but is nan"),
    ("data.off_equilibrium.method=GFN9-xTB", "data.off_equilibrium.method must be one of GFN2-xTB, GFN1-xTB, IPEA1-xTB"),
    ("data.off_equilibrium.wieght=0.1", "did you mean 'data.off_equilibrium.weight'"),
]

MD_OPTIONS = [  # (extra md arguments, what the sentence must say)
    (["--temperature", "-5"], "the temperature (K) must be a number >= 0, but is -5.0"),
    (["--temperature", "inf"], "the temperature (K) must be a number >= 0, but is inf"),
    (["--timestep", "0"], "the time step (fs) must be a positive number, but is 0.0"),
    (["--timestep", "-1"], "the time step (fs) must be a positive number, but is -1.0"),
    (["--timestep", "nan"], "the time step (fs) must be a positive number, but is nan"),
    (["--time", "0ps"], "the total time (fs) must be a positive number, but is 0.0"),
    (["--time", "5parsecs"], "cannot read the duration '5parsecs'"),
    (["--friction", "-1"], "the Langevin friction (1/fs) must be a number >= 0, but is -1.0"),
    (["--thermostat", "nose-hoover", "--tdamp", "-5"], "the Nose-Hoover damping time (fs) must be a positive number, but is -5.0"),
    (["--thermostat", "nose-hoover", "--tdamp", "0"], "the Nose-Hoover damping time (fs) must be a positive number, but is 0.0"),
    (["--replicas", "0"], "--replicas must be at least 1"),
    (["--replicas", "-3"], "--replicas must be at least 1"),
    (["--check-interval", "0"], "the collapse check interval (steps) must be at least 1, but is 0"),
    (["--write-interval", "-1"], "the write interval (steps) must be 0 or more"),
    (["--thermo-interval", "0"], "the thermo interval (steps) must be at least 1, but is 0"),
    (["--restart-every", "-5"], "the restart interval (steps) must be 0 or more"),
    (["--device", "cuda:3"], "device 'cuda:3'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
    (["--reference", "/missing/data.xyz"], "could not read the structure file /missing/data.xyz"),
]


def _assert_refused(argv, fragment, capsys, folder):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("setting, fragment", TRAIN_SETTINGS, ids=[s for s, _ in TRAIN_SETTINGS])
def test_train_refuses(setting, fragment, xtb_ethanol_file, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\ndata: {{path: {xtb_ethanol_file}, valid: 4}}\ntrain: {{epochs: 1}}\n")
    assert _assert_refused(["train", str(config), "--no-progress", "--set", setting], fragment, capsys, tmp_path) == ["c.yaml"]


@pytest.mark.parametrize("extra, fragment", MD_OPTIONS, ids=[" ".join(e) for e, _ in MD_OPTIONS])
def test_md_refuses(extra, fragment, trained_model_file, tmp_path, capsys):
    argv = ["md", str(trained_model_file), "ethanol", "-o", str(tmp_path / "md"), "--no-progress"]
    argv += extra if "--time" in extra else ["--time", "1fs", *extra]
    assert _assert_refused(argv, fragment, capsys, tmp_path) == []


@pytest.mark.parametrize("kind", ["transformer", "egnn"])
def test_an_unknown_radial_basis_is_refused_naming_the_models_bases(kind):
    from remul_ff.config import config_from_dict
    from remul_ff.errors import ConfigError
    from remul_ff.models.common import RADIAL_BASES

    with pytest.raises(ConfigError, match=f"'model.radial_basis' must be one of {', '.join(RADIAL_BASES)}, but got 'cosine'"):
        config_from_dict({"model": {"kind": kind, "radial_basis": "cosine"}})


UNREADABLE_STRUCTURES = [  # (file name, its contents, what the sentence must say)
    ("notes.md", "# Notes\n\nnot a structure\n", "no structure"),  # as README.md was read: no error, no frames
    ("empty.xyz", "0\nno atoms here\n", "a structure without atoms"),
]


@pytest.mark.parametrize("as_reference", [False, True], ids=["start", "reference"])
@pytest.mark.parametrize("name, contents, fragment", UNREADABLE_STRUCTURES, ids=["no frames", "no atoms"])
def test_md_refuses_a_structure_file_without_structures(name, contents, fragment, as_reference, trained_model_file, tmp_path, capsys):
    """ASE reads these without an error (an empty list, a frame of 0 atoms): the CLI must still refuse them."""
    source = tmp_path / name
    source.write_text(contents)
    structure, extra = ("ethanol", ["--reference", str(source)]) if as_reference else (str(source), [])
    argv = ["md", str(trained_model_file), structure, "-o", str(tmp_path / "md"), "--no-progress", "--time", "1fs", *extra]
    assert _assert_refused(argv, f"ASE reads {fragment} from {source}", capsys, tmp_path) == [name]
