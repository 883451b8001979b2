"""Frames for fitting a direct-force head to its own model: the model's MD, labelled by the model itself.

A head fitted with ``loss.direct_forces_target: conservative`` needs no DFT labels, so it can learn on as
many geometries as MD gives, where multiple time stepping will use it. This script runs batched
Langevin MD of the model from random frames of a data file at each temperature and writes every
``--every``-th step of every replica, with the model's own energy and conservative forces (float64) as
labels, to one extended-XYZ file (derived data: keep it under the git-ignored ``runs/``).

Run from the repository root, e.g.::

    OMP_NUM_THREADS=1 python benchmarks/self_distillation_frames.py \\
        benchmarks/direct_forces/runs/augment_30min_seed0/model.pt ../shared/data/rmd17_ethanol/train.xyz \\
        runs/self_distillation/ethanol_md.xyz --temperatures 300 500 --replicas 32 --time-fs 2000 --every 40
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import torch

from remul_ff.data.batch import Structure, collate
from remul_ff.md import MDSettings, run_md
from remul_ff.models import load_model, predict


def md_frames(model_path: str, starts: list, temperature: float, time_fs: float, every: int, seed: int) -> list:
    """Every ``every``-th MD frame of each replica (the first, the start, left out)."""
    settings = MDSettings(temperature=temperature, total_time_fs=time_fs, write_interval=every, seed=seed, traj_format="extxyz")
    with tempfile.TemporaryDirectory() as folder:
        run_md(model_path, starts, settings, output_dir=folder, progress=False)
        return [a for path in sorted(Path(folder).glob("replica_*")) for a in ase.io.read(path, index="1:")]


def self_labelled(model_path: str, frames: list, batch_size: int = 64) -> list:
    """``frames`` with the model's own energy and forces as their labels (float64)."""
    model = load_model(model_path, dtype=torch.float64)
    labelled = []
    for start in range(0, len(frames), batch_size):
        batch = collate([Structure(a.positions, a.numbers) for a in frames[start : start + batch_size]], dtype=torch.float64)
        prediction = predict(model, batch)
        labelled += [s.to_atoms() for s in batch.replace(energy=prediction.energy, forces=prediction.forces).split()]
    return labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data", help="frames to start MD from")
    parser.add_argument("output")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 500.0])
    parser.add_argument("--replicas", type=int, default=32, help="per temperature")
    parser.add_argument("--time-fs", type=float, default=2000.0)
    parser.add_argument("--every", type=int, default=40, help="steps between kept frames (0.5 fs steps)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = ase.io.read(args.data, index=":")
    rng = np.random.default_rng(args.seed)
    frames = []
    for i, temperature in enumerate(args.temperatures):
        starts = [data[j].copy() for j in rng.choice(len(data), args.replicas, replace=False)]
        frames += md_frames(args.model, starts, temperature, args.time_fs, args.every, args.seed + i)
    rng.shuffle(frames)  # the training split takes the first frames: mix temperatures and replicas
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.output, self_labelled(args.model, frames), format="extxyz")
    print(f"wrote {len(frames)} frames to {args.output}")


if __name__ == "__main__":
    main()
