"""run_md from Python: a model path, a single Atoms, any iterable of them and settings as a dict (or
none) are accepted; bad starting structures and settings get one sentence before anything is written,
not an indexing, attribute or reshape error in the first force call."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from remul_ff.errors import ConfigError, DataError, RemulError
from remul_ff.md import MDSettings, run_md
from remul_ff.models import load_model

SHORT = dict(total_time_fs=1.0, timestep_fs=0.5, write_interval=0, thermo_interval=1)


def test_a_model_path_and_a_single_atoms_run_as_the_loaded_model_and_a_list(trained_model_file):
    ethanol = molecule("CH3CH2OH")
    by_path = run_md(str(trained_model_file), ethanol, MDSettings(**SHORT), progress=False)
    by_model = run_md(load_model(trained_model_file), [ethanol], MDSettings(**SHORT), progress=False)
    assert by_path.n_replicas == by_model.n_replicas == 1
    assert by_path.collapses == by_model.collapses == []


def test_starts_from_any_iterable_and_settings_from_a_dict(trained_model_file):
    result = run_md(str(trained_model_file), (atoms for atoms in [molecule("CH3CH2OH")] * 2), SHORT, progress=False)
    assert (result.n_replicas, result.n_steps, result.timestep_fs) == (2, 2, 0.5)


def test_numpy_numbers_are_valid_settings():
    MDSettings(temperature=np.int64(300), timestep_fs=np.float32(0.5), write_interval=np.int64(0)).validate()


def test_no_settings_means_the_defaults(trained_model_file, monkeypatch):
    seen = []

    def record_and_stop(settings: MDSettings) -> None:  # the defaults' 2000 steps are not needed here
        seen.append(settings)
        raise RemulError("stopped after validation")

    monkeypatch.setattr(MDSettings, "validate", record_and_stop)
    with pytest.raises(RemulError, match="stopped after validation"):
        run_md(str(trained_model_file), molecule("CH3CH2OH"))
    assert seen == [MDSettings()]


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"temprature": 300}, ConfigError, "unknown config key 'temprature'; did you mean 'temperature'?"),
        (300, RemulError, "run_md's settings must be an MDSettings, a dict of its fields or None, not int"),
        (MDSettings(temperature="300"), RemulError, "the temperature \\(K\\) must be a number >= 0, but is '300'"),
        (MDSettings(write_interval=True), RemulError, "the write interval \\(steps\\) must be 0 or more \\(0 turns it off\\), but is True"),
    ],
    ids=["misspelt key", "not settings", "string", "bool"],
)
def test_bad_settings_are_one_sentence_and_write_nothing(trained_model_file, tmp_path, settings, error, message):
    out = tmp_path / "md"
    with pytest.raises(error, match=message):
        run_md(str(trained_model_file), molecule("CH3CH2OH"), settings, out, progress=False)
    assert not out.exists()


def _nan(atoms: Atoms) -> Atoms:
    atoms.positions[2, 1] = np.nan
    return atoms


def _periodic(atoms: Atoms) -> Atoms:
    atoms.cell, atoms.pbc = [10.0, 10.0, 10.0], True
    return atoms


@pytest.mark.parametrize(
    "starts, message",
    [
        (lambda: [], "run_md got no starting structures"),
        (lambda: [molecule("CH3CH2OH"), Atoms()], "the starting structure of replica 1 has no atoms"),
        (lambda: [molecule("CH3CH2OH"), molecule("NH3")], "the model was not trained on N; it knows only H, C, O"),
        (lambda: [_nan(molecule("CH3CH2OH"))], "the starting structure of replica 0 has NaN or infinite positions"),
        (lambda: [_periodic(molecule("CH3CH2OH"))], r"the starting structure of replica 0 is periodic \(pbc=\[True, True, True\]\)"),
        (lambda: "ethanol", "run_md starts from ase.Atoms \\(one, or a list of them\\), not str; read a structure file"),
        (lambda: list(molecule("CH3CH2OH")), "run_md starts from ase.Atoms .*, not Atom;"),
    ],
    ids=["none", "no atoms", "unknown element", "nan", "periodic", "a name", "Atom objects"],
)
def test_bad_starting_structures_are_one_sentence_and_write_nothing(trained_model_file, tmp_path, starts, message):
    out = tmp_path / "md"
    with pytest.raises(DataError, match=message):
        run_md(load_model(trained_model_file), starts(), MDSettings(**SHORT), out, progress=False)
    assert not out.exists()
