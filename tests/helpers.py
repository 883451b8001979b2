"""Helpers the tests share (structures, labels, small models); the fixtures are in conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule

from remul_ff.data.batch import Structure


def jittered_molecules(name: str, n: int, seed: int = 0, scale: float = 0.05) -> list[Atoms]:
    """``n`` copies of ``ase.build.molecule(name)`` with Gaussian noise on the positions."""
    rng = np.random.default_rng(seed)
    base = molecule(name)
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def labelled(frames: list[Atoms], seed: int = 0) -> list[Structure]:
    """Attach arbitrary but deterministic labels (not physical; for I/O tests)."""
    rng = np.random.default_rng(seed)
    return [Structure.from_atoms(a, float(rng.normal()), rng.normal(size=(len(a), 3))) for a in frames]


def xtb_labelled(frames: list[Atoms]) -> list[Structure]:
    """Label frames with GFN2-xTB (tblite): real chemistry, about 20 ms per ethanol frame."""
    from remul_ff.data.generate import xtb_calculator

    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = xtb_calculator()
        out.append(Structure.from_atoms(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return out


def write_xtb_ethanol(path: Path) -> Path:
    """Write the frames of :func:`xtb_ethanol_file` to ``path``."""
    from remul_ff.data.generate import write_extxyz

    write_extxyz(xtb_labelled(jittered_molecules("CH3CH2OH", 48, seed=1, scale=0.08)), path)
    return path


def tiny_model(kind: str = "transformer", dtype=None, **hyper):
    """A small randomly initialised model for H, C, N, O."""
    import torch

    from remul_ff.models import build_model

    defaults = {
        "transformer": {"width": 16, "depth": 2, "heads": 2, "r_max": 4.0, "num_radial": 8},
        "egnn": {"width": 16, "depth": 3, "r_max": 4.0, "num_radial": 8},
    }
    torch.manual_seed(0)
    model = build_model(kind, {**defaults.get(kind, {}), **hyper}, [1, 6, 7, 8], {1: -13.6, 6: -1025.0, 7: -1479.0, 8: -2035.0}, 0.5, -0.1)
    return model.to(dtype=dtype or torch.float64)
