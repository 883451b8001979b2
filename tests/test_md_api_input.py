"""run_md from Python: a model path and a single Atoms are accepted; bad starting structures get one
sentence before anything is written, not an indexing or reshape error in the first force call."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from remul_ff.errors import DataError
from remul_ff.md import MDSettings, run_md
from remul_ff.models import load_model

SHORT = dict(total_time_fs=1.0, timestep_fs=0.5, write_interval=0, thermo_interval=1)


def test_a_model_path_and_a_single_atoms_run_as_the_loaded_model_and_a_list(trained_model_file):
    ethanol = molecule("CH3CH2OH")
    by_path = run_md(str(trained_model_file), ethanol, MDSettings(**SHORT), progress=False)
    by_model = run_md(load_model(trained_model_file), [ethanol], MDSettings(**SHORT), progress=False)
    assert by_path.n_replicas == by_model.n_replicas == 1
    assert by_path.collapses == by_model.collapses == []


def _nan(atoms: Atoms) -> Atoms:
    atoms.positions[2, 1] = np.nan
    return atoms


def _periodic(atoms: Atoms) -> Atoms:
    atoms.cell, atoms.pbc = [10.0, 10.0, 10.0], True
    return atoms


@pytest.mark.parametrize("starts, message", [
    (lambda: [], "run_md got no starting structures"),
    (lambda: [molecule("CH3CH2OH"), Atoms()], "the starting structure of replica 1 has no atoms"),
    (lambda: [molecule("CH3CH2OH"), molecule("NH3")], "the model was not trained on N; it knows only H, C, O"),
    (lambda: [_nan(molecule("CH3CH2OH"))], "the starting structure of replica 0 has NaN or infinite positions"),
    (lambda: [_periodic(molecule("CH3CH2OH"))], r"the starting structure of replica 0 is periodic \(pbc=\[True, True, True\]\)"),
], ids=["none", "no atoms", "unknown element", "nan", "periodic"])
def test_bad_starting_structures_are_one_sentence_and_write_nothing(trained_model_file, tmp_path, starts, message):
    out = tmp_path / "md"
    with pytest.raises(DataError, match=message):
        run_md(load_model(trained_model_file), starts(), MDSettings(**SHORT), out, progress=False)
    assert not out.exists()
