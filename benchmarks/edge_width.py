"""Is a smaller ``model.edge_width`` the way to 30x MACE on 3BPA (issue 13), and what does it cost in accuracy?

Work per atom pair (the edge MLP and each block's edge projection, ``edge_width`` wide on input) is
most of a step's arithmetic (benchmarks/README.md). This script compares transformers trained with
the same recipe, data split and budget (``spec_rmd17_ethanol_500K.yaml``: ``remul_offeq_f02``, edge
width = width = 128, the default; ``remul_offeq_f02_ew64``, 64; 30 minutes on one thread each) on

* ms per ASE VelocityVerlet step (0.5 fs) through the compiled calculator, float32, on the first
  frame of rMD17 ethanol (9 atoms) and of 3BPA (27 atoms), timed in interleaved blocks, medians over
  blocks (for 3BPA, whose nitrogen the ethanol models never saw, untrained models of the same size:
  weights do not change the speed, as in md_speed.py);
* validation energy and force MAE at the end of training (their ``log.csv``: the same 50 frames).

Usage (from ``benchmarks/``; compiles each model once, ~1 min, cached)::

    python edge_width.py stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt \\
        stability/rmd17_ethanol_500K/remul_offeq_f02_ew64/model.pt

Writes ``results/edge_width.{json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet
from perf._common import write_results
from perf.md_speed import STRUCTURES, calculator_for

from remul_ff.models.files import MODEL_FILE_KIND, load_file


def edge_width(model_path: str) -> int:
    hyper = load_file(model_path, MODEL_FILE_KIND)["hyperparameters"]
    return hyper.get("edge_width") or hyper["width"]


def final_validation(model_path: str) -> dict[str, float]:
    """The last epoch's validation MAEs and the epochs done, from the training log beside the model."""
    rows = list(csv.DictReader(open(Path(model_path).parent / "log.csv")))
    return {
        "epochs": int(rows[-1]["epoch"]),
        "val_energy_mae_meV": float(rows[-1]["val_energy_mae_meV"]),
        "val_forces_mae_meV_A": float(rows[-1]["val_forces_mae_meV_A"]),
        "training_wall_time_s": float(rows[-1]["wall_time_s"]),
    }


def ase_step_ms(model_paths: list[str], xyz: Path, blocks: int, steps: int) -> dict[str, dict]:
    """Median ms per compiled ASE MD step of each model, in interleaved blocks of ``steps`` steps.

    Each block starts again from the first frame of ``xyz`` at rest: an untrained 3BPA model would
    not stay bonded for long (md_speed.py times 200 steps the same way).
    """
    runs = {}
    for path in model_paths:
        atoms = read(xyz, index=0)
        atoms.pbc = False
        atoms.calc = calculator_for(path, atoms.numbers.tolist(), "float32", compile=True)
        runs[f"edge_width {edge_width(path)}"] = (atoms, VelocityVerlet(atoms, 0.5 * units.fs), atoms.positions.copy())
    times = {name: [] for name in runs}
    for block in range(blocks):
        for name in list(runs) if block % 2 == 0 else list(runs)[::-1]:
            atoms, dyn, start = runs[name]
            atoms.positions, atoms.velocities = start, np.zeros_like(start)
            dyn.run(2)  # warm
            begin = time.perf_counter()
            dyn.run(steps)
            times[name].append(1e3 * (time.perf_counter() - begin) / steps)
    return {name: {"median_ms": statistics.median(t), "blocks_ms": t} for name, t in times.items()}


def markdown(results: dict) -> str:
    names = list(results["models"])
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for molecule, timings in results["ase_step_ms"].items():
        lines.append(f"| ms per ASE step, {molecule} | " + " | ".join(f"{timings[n]['median_ms']:.2f}" for n in names) + " |")
    for key, label in [
        ("val_forces_mae_meV_A", "validation force MAE (meV/Å)"),
        ("val_energy_mae_meV", "validation energy MAE (meV)"),
        ("epochs", "epochs in the budget"),
    ]:
        lines.append(f"| {label} | " + " | ".join(f"{results['models'][n][key]:.4g}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="model.pt files trained with the same recipe and budget")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="MD steps per block")
    args = parser.parse_args()
    models = {f"edge_width {edge_width(p)}": {"path": p, **final_validation(p)} for p in args.models}
    timings = {name: ase_step_ms(args.models, xyz, args.blocks, args.steps) for name, xyz in STRUCTURES.items()}
    results = {"models": models, "ase_step_ms": timings}
    write_results("edge_width", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
