"""Turn a :class:`~remul_ff.config.DataConfig` into split, validated structures and E0s."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from remul_ff.config import DataConfig
from remul_ff.data.batch import Structure
from remul_ff.data.domain import training_domain
from remul_ff.data.e0s import reference_energy, resolve_e0s
from remul_ff.data.off_equilibrium import load_or_make
from remul_ff.data.readers import read_structures
from remul_ff.data.splits import load_splits, save_splits, split_indices
from remul_ff.errors import DataError

logger = logging.getLogger(__name__)

OFF_EQUILIBRIUM_FILE = "off_equilibrium.xyz"
"""Cache of the off-equilibrium frames, beside ``splits.json`` in the run's folder."""


@dataclass
class PreparedData:
    """Everything the trainer needs from the data.

    Attributes:
        train: Training structures (the DFT frames, then any off-equilibrium frames).
        valid: Validation structures.
        test: Test structures (may be empty).
        e0s: Reference energy per element, eV.
        elements: Sorted atomic numbers present in the data.
        energy_shift: Mean per-atom interaction energy of the training set, eV.
        force_rms: Root-mean-square force component of the training set, eV/Å.
        domain: Shortest distance per element pair over the training frames (DFT frames only),
            stored in the model file so that the calculator can flag extrapolation.
    """

    train: list[Structure]
    valid: list[Structure]
    test: list[Structure]
    e0s: dict[int, float]
    elements: list[int]
    energy_shift: float
    force_rms: float
    domain: dict[str, float] = field(default_factory=dict)


def ensure_data(config: DataConfig, progress: bool = True) -> None:
    """Generate GFN2-xTB reference data at ``config.path`` when it is missing and ``generate`` is set."""
    if not config.path:
        raise DataError("data.path is empty; set it in the config or with --set data.path=FILE.")
    if Path(config.path).exists():
        return
    if config.generate is None:
        raise DataError(f"data file {config.path} does not exist; check data.path (or add a data.generate section).")
    from remul_ff.data.generate import load_molecule, run_reference_md, write_extxyz

    gen = config.generate
    logger.info(f"{config.path} not found: generating {gen.n_frames} GFN2-xTB frames of {gen.molecule} at {gen.temperature} K")
    write_extxyz(run_reference_md(load_molecule(gen.molecule), gen, progress=progress), config.path)


def prepare_data(config: DataConfig, split_file: Path, progress: bool = True) -> PreparedData:
    """Read, split (reusing ``split_file`` when it exists), and compute E0s and statistics."""
    ensure_data(config, progress)
    index = ":" if config.max_frames is None else f":{config.max_frames}"
    frames = read_structures(config.path, config.format, config.energy_key, config.forces_key, index=index)
    if len(frames) < 2:
        raise DataError(
            f"{config.path} holds {len(frames)} labelled frame; training needs at least 2 (one to train on, "
            "one to validate), so add frames."
        )
    if split_file.exists():
        splits = load_splits(split_file)
        if max(max(v, default=-1) for v in splits.values()) >= len(frames):
            raise DataError(f"{split_file} refers to frames beyond the {len(frames)} in {config.path}; delete it to draw a new split.")
    else:
        splits = split_indices(len(frames), config.valid, config.test, config.train, config.split_seed)
        save_splits(splits, split_file)
    train, valid, test = ([frames[i] for i in splits[name]] for name in ("train", "valid", "test"))
    if not valid:
        raise DataError(
            f"the validation split is empty (data.valid = {config.valid:g} of {len(frames)} frames); set data.valid "
            "to a count of at least 1 (--set data.valid=1) or to a larger fraction, or add frames."
        )
    e0s = resolve_e0s(config.e0s, train, frames)
    interaction = [(s.energy - reference_energy(s, e0s)) / len(s) for s in train]
    forces = np.concatenate([s.forces.reshape(-1) for s in train])
    domain = training_domain(train)
    if config.off_equilibrium is not None:  # after the statistics, which describe the DFT data only
        train = train + load_or_make(train, config.off_equilibrium, split_file.parent / OFF_EQUILIBRIUM_FILE, progress)
    return PreparedData(
        train=train,
        valid=valid,
        test=test,
        e0s=e0s,
        elements=sorted({int(z) for s in frames for z in s.numbers}),
        energy_shift=float(np.mean(interaction)),
        force_rms=float(np.sqrt(np.mean(forces**2))) or 1.0,
        domain=domain,
    )
