"""Warnings at the start of MD: atoms the collapse monitor cannot watch, a time step too long for
hydrogen; and the command line prints remul-ff's warnings as one line, like its errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from ase import Atoms
from ase.build import molecule

from remul_ff.cli import main
from remul_ff.md.engine import warn_long_timestep
from remul_ff.md.monitor import CollapseMonitor
from remul_ff.md.state import state_from_atoms

BOHR_IN_A = 0.529177


def monitor_of(structures: list[Atoms]) -> CollapseMonitor:
    return CollapseMonitor(state_from_atoms(structures, "cpu", torch.float64), max_temperature=1e4)


def test_the_monitor_warns_when_a_start_has_atoms_bonded_to_nothing():
    ethanol = molecule("CH3CH2OH")
    in_bohr = ethanol.copy()
    in_bohr.positions /= BOHR_IN_A  # Bohr coordinates read as Å: every bond 1.9x too long
    with pytest.warns(
        UserWarning,
        match=r"in 1 of 3 starting structures .*\(replica 1: atoms 0 \(C\), 1 \(C\), 2 \(O\), 3 \(H\), "
        r"4 \(H\), 5 \(H\), \.\.\.\).* in Å",
    ):
        monitor = monitor_of([ethanol, in_bohr, ethanol])
    assert len(monitor.bonds) == 2 * 8  # ethanol's 8 bonds, twice; none in the stretched copy


def test_the_monitor_names_only_the_atoms_that_are_bonded_to_nothing():
    lost_hydrogen = molecule("CH3CH2OH")
    lost_hydrogen.positions[8] += [0.0, 0.0, 4.0]
    with pytest.warns(UserWarning, match=r"in 1 of 1 starting structures .*\(replica 0: atoms 8 \(H\)\)"):
        monitor_of([lost_hydrogen])


@pytest.mark.parametrize("structures", [[molecule("CH3CH2OH")] * 2, [Atoms("Ar"), molecule("H2O")]], ids=["ethanol", "one atom"])
def test_the_monitor_is_silent_when_every_atom_is_bonded(structures):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor_of(structures)


def test_a_time_step_too_long_for_hydrogen_warns():
    with pytest.warns(UserWarning, match="a time step of 2 fs is long for molecules with hydrogen"):
        warn_long_timestep(2.0, [molecule("CO2"), molecule("CH3CH2OH")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_long_timestep(1.0, [molecule("CH3CH2OH")])
        warn_long_timestep(2.0, [molecule("CO2")])  # no hydrogen: slower vibrations


def test_the_command_line_prints_remul_ff_warnings_as_one_line(trained_model_file, tmp_path, capsys):
    argv = ["md", str(trained_model_file), "ethanol", "-o", str(tmp_path / "md"), "--time", "4fs", "--timestep", "2", "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [next(line for line in err if line.startswith("remul-ff md: warning: a time step of 2 fs is long"))], err
    with pytest.warns(UserWarning, match="a time step of 2 fs"):  # Python's own display is back after main
        warn_long_timestep(2.0, [molecule("CH3CH2OH")])
