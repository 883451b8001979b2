"""Shared fixtures: tiny synthetic data sets written by the tests themselves (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

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


def xtb_labelled(frames: list[Atoms]) -> list[Structure]:
    """Label frames with GFN2-xTB (tblite): real chemistry, about 20 ms per ethanol frame."""
    from remul_ff.data.generate import xtb_calculator

    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = xtb_calculator()
        out.append(Structure.from_atoms(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return out


@pytest.fixture(scope="session")
def xtb_ethanol_file(tmp_path_factory):
    """An extxyz file of 48 jittered ethanol frames with GFN2-xTB energies and forces.

    ``REMUL_FF_TEST_XTB_ETHANOL`` names a copy made elsewhere by :func:`write_xtb_ethanol` (the
    GPU machine has no tblite: ``benchmarks/gpu_check.sh`` brings the file instead).
    """
    made_elsewhere = os.environ.get("REMUL_FF_TEST_XTB_ETHANOL")
    if made_elsewhere:
        return Path(made_elsewhere)
    return write_xtb_ethanol(tmp_path_factory.mktemp("data") / "xtb_ethanol.xyz")


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


@pytest.fixture(scope="session")
def trained_model_file(xtb_ethanol_file, tmp_path_factory):
    """A small transformer trained for a few seconds on the xTB ethanol frames: a smooth,
    roughly physical potential for calculator and MD tests."""
    from remul_ff.config import config_from_dict
    from remul_ff.training.trainer import Trainer

    out = tmp_path_factory.mktemp("trained")
    config = config_from_dict(
        {
            "output_dir": str(out),
            "data": {"path": str(xtb_ethanol_file), "valid": 8},
            "model": {"kind": "transformer", "width": 32, "depth": 2, "heads": 4, "r_max": 4.0, "num_radial": 8},
            "loss": {"mode": "augment"},
            "train": {"epochs": 15, "batch_size": 4, "lr": 3e-3, "ema_decay": 0.0, "eval_rotations": 0, "device": "cpu"},
        }
    )
    Trainer(config, progress=False).run()
    return out / "model.pt"
