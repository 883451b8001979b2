"""Shared fixtures: tiny synthetic data sets written by the tests themselves (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
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


@pytest.fixture
def ethanol_structures() -> list[Structure]:
    """Five labelled, jittered ethanol molecules."""
    return labelled(jittered_molecules("CH3CH2OH", 5))
