"""Reference data with no download: Langevin MD with GFN2-xTB (tblite), sampling decorrelated frames."""

from __future__ import annotations

import os
from dataclasses import dataclass

import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.constraints import FixCom
from ase.md import velocitydistribution
from ase.md.langevin import Langevin

from remul_ff.data.batch import Structure
from remul_ff.errors import DataError
from remul_ff.utils.io import atomic_path
from remul_ff.utils.progress import progress_bar

MOLECULE_ALIASES = {"ethanol": "CH3CH2OH", "water": "H2O", "methane": "CH4", "benzene": "C6H6", "ammonia": "NH3"}
"""Common names accepted besides ``ase.build.molecule``'s formula-style names."""


@dataclass
class GenerateSettings:
    """Settings of a reference-data run.

    Attributes:
        temperature: Langevin target temperature in K.
        timestep: MD time step in fs.
        n_frames: Frames to write.
        sample_every: MD steps between written frames (decorrelation).
        equilibration: MD steps run before the first frame is kept.
        friction: Langevin friction in 1/fs.
        method: tblite method name.
        seed: Seed for initial velocities and the Langevin noise.
    """

    temperature: float = 500.0
    timestep: float = 0.5
    n_frames: int = 100
    sample_every: int = 20
    equilibration: int = 100
    friction: float = 0.01
    method: str = "GFN2-xTB"
    seed: int = 0


def read_frames(path: str) -> list[Atoms]:
    """Every frame of a structure or data file; a :class:`DataError` if there is none, or one has no atoms."""
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise DataError(f"could not read the structure file {path} ({reason}); check the path and its format.") from exc
    if not frames or not all(len(frame) for frame in frames):
        what = "no structure" if not frames else "a structure without atoms"
        raise DataError(f"ASE reads {what} from {path}; give a structure file such as .xyz, .extxyz, .traj or .pdb.")
    return frames


def load_molecule(source: str) -> Atoms:
    """A structure from a file path (its first frame) or an ``ase.build.molecule`` name such as ``"CH3CH2OH"``."""
    if os.path.exists(source):
        return read_frames(source)[0]
    try:
        return molecule(MOLECULE_ALIASES.get(source.lower(), source))
    except KeyError:
        raise DataError(
            f"{source!r} is neither a file nor a molecule name known to ase.build.molecule "
            "(for example 'ethanol', 'CH3CH2OH' or 'H2O'); give a structure file instead."
        ) from None


def xtb_calculator(method: str = "GFN2-xTB"):
    """tblite's ASE calculator, with its console output silenced."""
    from tblite.ase import TBLite

    return TBLite(method=method, verbosity=0)


def run_reference_md(atoms: Atoms, settings: GenerateSettings, calculator=None, progress: bool = True) -> list[Structure]:
    """Run Langevin MD and return ``settings.n_frames`` labelled frames.

    Args:
        atoms: Starting structure (copied).
        settings: Temperature, time step, sampling interval, ...
        calculator: ASE calculator for the labels; GFN2-xTB by default.
        progress: Show a tqdm progress bar.
    """
    atoms = atoms.copy()
    atoms.calc = calculator if calculator is not None else xtb_calculator(settings.method)
    rng = np.random.default_rng(settings.seed)
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None)  # ASE >= 3.28
    thermalize = thermalize or velocitydistribution.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=settings.temperature, rng=rng)
    velocitydistribution.Stationary(atoms)
    velocitydistribution.ZeroRotation(atoms)
    # FixCom instead of Langevin's fixcm, which samples NVT slightly wrongly (ASE 3.28 notes).
    atoms.set_constraint(FixCom())
    dyn = Langevin(
        atoms, settings.timestep * units.fs, temperature_K=settings.temperature, friction=settings.friction / units.fs, rng=rng, fixcm=False
    )
    dyn.run(settings.equilibration)
    frames = []
    for _ in progress_bar(range(settings.n_frames), desc="xTB MD frames", disable=not progress):
        dyn.run(settings.sample_every)
        # Raw forces: FixCom would zero the net force, which is not the DFT/xTB label.
        frame = Structure.from_atoms(atoms, atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False))
        frame.validate(f"MD frame {len(frames)}")
        frames.append(frame)
    return frames


def write_extxyz(structures: list[Structure], path: str | os.PathLike, info: dict | None = None) -> None:
    """Write labelled structures as extended XYZ, atomically (no partial file on failure).

    ``info`` (plain tokens or numbers) goes into every frame's comment line, e.g. a cache key.
    """
    frames = [s.to_atoms() for s in structures]
    for atoms in frames:
        atoms.info.update(info or {})
    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
