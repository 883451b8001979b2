"""Shared fixtures: tiny synthetic data sets written by the tests themselves (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from remul_ff.data.batch import Structure
from tests.helpers import jittered_molecules, labelled, tiny_model, write_xtb_ethanol, xtb_labelled  # noqa: F401 (re-exported)


@pytest.fixture
def ethanol_structures() -> list[Structure]:
    """Five labelled, jittered ethanol molecules."""
    return labelled(jittered_molecules("CH3CH2OH", 5))


@pytest.fixture(scope="session")
def xtb_ethanol_file(tmp_path_factory):
    """An extxyz file of 48 jittered ethanol frames with GFN2-xTB energies and forces.

    ``REMUL_FF_TEST_XTB_ETHANOL`` names a copy made elsewhere by :func:`write_xtb_ethanol` (the
    GPU machine has no tblite: ``benchmarks/perf/gpu_check.sh`` brings the file instead).
    """
    made_elsewhere = os.environ.get("REMUL_FF_TEST_XTB_ETHANOL")
    if made_elsewhere:
        return Path(made_elsewhere)
    return write_xtb_ethanol(tmp_path_factory.mktemp("data") / "xtb_ethanol.xyz")


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


@pytest.fixture(scope="session")
def direct_model_file(xtb_ethanol_file, tmp_path_factory):
    """A small transformer with a direct-force head, trained with REMUL for a few seconds."""
    from remul_ff.config import config_from_dict
    from remul_ff.training.trainer import Trainer

    out = tmp_path_factory.mktemp("direct")
    config = config_from_dict(
        {
            "output_dir": str(out),
            "data": {"path": str(xtb_ethanol_file), "valid": 8},
            "model": {"kind": "transformer", "width": 32, "depth": 2, "heads": 4, "r_max": 4.0, "num_radial": 8, "direct_forces": True},
            "train": {"epochs": 15, "batch_size": 4, "lr": 3e-3, "ema_decay": 0.0, "eval_rotations": 2, "device": "cpu"},
        }
    )
    Trainer(config, progress=False).run()
    return out / "model.pt"
