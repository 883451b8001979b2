"""Pretraining frames for transfer from GFN2-xTB to DFT: rattled copies of the DFT training frames, xTB-labelled.

A transformer that must learn rotational invariance and the shape of the potential from 950 DFT frames
overfits them (training force RMSE ~6 meV/Å, validation MAE ~11 at 60 minutes). GFN2-xTB costs ~4 ms a
frame for ethanol, so the same geometries, each rattled many times, give tens of thousands of labels of a
potential of similar shape (xTB forces differ from PBE's by ~0.34 eV/Å on rMD17 ethanol) in a minute or
two. A model pretrained on them and then trained on the DFT frames (``train.init_from`` with
``train.init_energy_reference: data``) starts from that shape. Only the *training* split's frames are
rattled (the same split as the DFT run: ``--train``, ``--valid``, ``--split-seed``), so no validation frame
leaks in; the wall time of this script counts against the recipe's budget.

Run from the repository root, e.g.::

    OMP_NUM_THREADS=1 python benchmarks/xtb_pretraining_frames.py ../shared/data/rmd17_ethanol/train.xyz \\
        runs/xtb_pretraining/ethanol_rattled.xyz --copies 20 --sigmas 0.02 0.05 0.08
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from remul_ff.data.generate import xtb_calculator
from remul_ff.data.splits import split_indices
from remul_ff.utils.io import atomic_path


def rattled_frames(frames: list, copies: int, sigmas: list[float], seed: int) -> list:
    """``copies`` Gaussian-rattled copies of each frame, the displacement width cycling through ``sigmas`` (Å)."""
    rng, out = np.random.default_rng(seed), []
    for atoms in frames:
        for copy_index in range(copies):
            rattled = atoms.copy()
            rattled.positions += rng.normal(0.0, sigmas[copy_index % len(sigmas)], rattled.positions.shape)
            out.append(rattled)
    return out


def xtb_labelled(frames: list) -> list:
    """``frames`` with GFN2-xTB energy and forces as their labels."""
    calc = xtb_calculator()
    for atoms in frames:
        atoms.calc = calc
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="DFT data file (its training split is rattled)")
    parser.add_argument("output", help="extended-XYZ file to write")
    parser.add_argument("--train", type=int, default=950)
    parser.add_argument("--valid", type=int, default=50)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--copies", type=int, default=20, help="rattled copies per training frame")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.02, 0.05, 0.08], help="displacement widths in Å")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    frames = ase.io.read(args.data, index=":")
    train = [frames[i] for i in split_indices(len(frames), args.valid, 0, args.train, args.split_seed)["train"]]
    labelled = xtb_labelled(rattled_frames(train, args.copies, args.sigmas, args.seed))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as tmp:
        ase.io.write(tmp, labelled, format="extxyz")
    print(f"{len(labelled)} xTB-labelled frames in {time.perf_counter() - start:.0f} s -> {args.output}")


if __name__ == "__main__":
    main()
