"""Test-time symmetrisation as a remedy for MD collapses (issue 12): what it changes and what it costs.

For one transformer of a stability spec, used plainly and averaged over the rotation groups of
4, 12 and 24 rotations (``RotationAveraged``, ``md.test_time_rotations`` in a compare spec):

* on the spec's held-out frames (the report's split): force and energy MAE, and the rotational
  errors under 4 random rotations per frame (``evaluate``);
* off the data: the rotational force error ``|F(Rx) - R F(x)| / |F(x)|`` on 900 K frames of the
  plain model's own Langevin MD;
* where MD breaks bonds: the barrier to the collapse criterion (rigid stretch or compression to
  mean length ± 0.5 Å) of every bond of every ``--every``-th training frame, and of a shared
  proton's transfer, next to GFN2-xTB's (``bond_scans.py``), and X-H stretches (``diagnose.py``);
  how far the averaging moves them, and how many scans stay below half of xTB's barrier;
* ms per ASE MD step (float32, VelocityVerlet, one held-out frame), the cost of the average.

    python benchmarks/stability/test_time_rotations.py --spec benchmarks/stability/spec_acac_500K.yaml \\
        --model benchmarks/stability/acac_500K/remul_offeq_md2/model.pt --out benchmarks/stability/diagnosis/test_time_rotations_acac

Writes ``OUT.json`` and ``OUT.md`` (both with the command).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bond_scans import barriers, scans, transfer_scans  # noqa: E402
from diagnose import barriers_to_collapse, energy_and_forces, hot_frames, rotational_error  # noqa: E402

from remul_ff.compare import load_spec  # noqa: E402
from remul_ff.data.bonds import mean_bond_lengths, molecular_bonds  # noqa: E402
from remul_ff.data.off_equilibrium import xtb_labels  # noqa: E402
from remul_ff.integrations import REMULCalculator  # noqa: E402
from remul_ff.models import load_model  # noqa: E402
from remul_ff.models.symmetrize import GROUP_ORDERS, with_test_time_rotations  # noqa: E402
from remul_ff.training.data import prepare_data  # noqa: E402
from remul_ff.training.evaluate import evaluate  # noqa: E402

ORDERS = (0, *GROUP_ORDERS)
ACCURACY_KEYS = ("forces_mae_meV_A", "energy_mae_meV", "equi_forces_rel", "equi_energy_abs_meV")


def ms_per_ase_step(model_path: str, atoms, order: int, steps: int = 40) -> float:
    """Wall ms per VelocityVerlet step (float32), the mean over ``steps`` after 5 untimed ones."""
    atoms = atoms.copy()
    atoms.calc = REMULCalculator(model_path, default_dtype="float32", test_time_rotations=order)
    dynamics = VelocityVerlet(atoms, 0.5 * units.fs)
    dynamics.run(5)
    start = time.perf_counter()
    dynamics.run(steps)
    return 1e3 * (time.perf_counter() - start) / steps


@dataclass
class Geometries:
    """What every group size is measured on (made once)."""

    data: object  # the spec's split
    hot: np.ndarray  # frames of the plain model's 900 K MD
    x_h_frames: list  # training frames for the X-H stretches
    bonds: np.ndarray
    mean_lengths: np.ndarray
    heavy_scans: list[dict]


def measure(model, on: Geometries) -> dict:
    """Accuracy and rotational errors on the held-out frames, off-data rotational error, barriers (eV)."""
    report = evaluate(model, on.data.valid, on.data.e0s, n_rotations=4, batch_size=16, seed=0)
    numbers = on.x_h_frames[0].numbers
    return {
        **{key: report[key] for key in ACCURACY_KEYS},
        "equi_forces_rel_hot_md": rotational_error(model, on.hot, numbers),
        "barriers": {
            "heavy": barriers(lambda g, z: energy_and_forces(model, g, z)[0], on.heavy_scans),
            "x_h": np.array(barriers_to_collapse(model, on.x_h_frames, on.bonds, on.mean_lengths)),
        },
    }


def summarise(result: dict, plain: dict, xtb: np.ndarray) -> dict:
    """Barrier statistics of one model against the plain model and xTB (the arrays leave the result)."""
    heavy, x_h = result.pop("barriers").values()
    result["heavy_scans_below_half_of_xtb"] = int((heavy < 0.5 * xtb).sum())
    result["heavy_barrier_min_eV"], result["x_h_barrier_min_eV"] = float(heavy.min()), float(x_h.min())
    moved = np.abs(np.concatenate([heavy - plain["heavy"], x_h - plain["x_h"]]))
    result["barrier_shift_vs_plain_median_meV"] = 1e3 * float(np.median(moved))
    result["barrier_shift_vs_plain_max_meV"] = 1e3 * float(moved.max())
    return result


def markdown(payload: dict) -> str:
    rows = [
        f"Command: `{payload['command']}`",
        "",
        f"Model: `{payload['model']}`; held-out frames: {payload['held_out']}; "
        f"900 K frames of its own MD: {payload['hot_frames']}; barrier scans: {payload['heavy_scans']} heavy-atom/transfer "
        f"(xTB reference) and {payload['x_h_scans']} X-H.",
        "",
        "| rotations | force MAE (meV/Å) | energy MAE (meV) | rot. force error, held-out | rot. force error, 900 K MD "
        "| heavy scans < ½ xTB | min heavy barrier (eV) | min X-H barrier (eV) | barrier shift median / max (meV) | ms per ASE step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for order, r in payload["orders"].items():
        rows.append(
            f"| {order} | {r['forces_mae_meV_A']:.2f} | {r['energy_mae_meV']:.2f} | {r['equi_forces_rel']:.2e} "
            f"| {r['equi_forces_rel_hot_md']:.2e} | {r['heavy_scans_below_half_of_xtb']} | {r['heavy_barrier_min_eV']:.3f} "
            f"| {r['x_h_barrier_min_eV']:.3f} | {r['barrier_shift_vs_plain_median_meV']:.2f} / "
            f"{r['barrier_shift_vs_plain_max_meV']:.1f} | {r['ms_per_ase_step_float32']:.2f} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="the compare spec whose data split the report used")
    parser.add_argument("--model", required=True, help="the transformer's model.pt")
    parser.add_argument("--out", required=True, help="output path without extension")
    parser.add_argument("--every", type=int, default=150, help="scan every N-th training frame (default 150)")
    parser.add_argument("--hot-replicas", type=int, default=4, help="replicas of the 900 K MD (1 ps each, default 4)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    data = prepare_data(spec.data, Path(spec.output_dir) / "splits.json", progress=False)
    frames, starts = [s.to_atoms() for s in data.train], [s.to_atoms() for s in data.valid]
    heavy_scans = scans(frames, args.every) + transfer_scans(frames, args.every)
    xtb = barriers(lambda g, z: np.array([xtb_labels(x, z, "GFN2-xTB")[0] for x in g]), heavy_scans)
    plain = load_model(args.model, "cpu", torch.float64)
    with tempfile.TemporaryDirectory() as hot_dir:
        hot = hot_frames(plain, starts[: args.hot_replicas], 900.0, Path(hot_dir))
    bonds = molecular_bonds(frames[0])
    on = Geometries(data, hot, frames[:: args.every], bonds, mean_bond_lengths(frames, bonds, frames[0].numbers), heavy_scans)
    measured = {}
    for order in ORDERS:
        measured[order] = measure(with_test_time_rotations(plain, order), on)
        print(f"{order} rotations: force MAE {measured[order]['forces_mae_meV_A']:.2f} meV/Å", flush=True)
    reference = dict(measured[0]["barriers"])
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "model": args.model,
        "held_out": len(data.valid),
        "hot_frames": len(hot),
        "heavy_scans": len(heavy_scans),
        "x_h_scans": len(reference["x_h"]),
        "orders": {},
    }
    for order in ORDERS:
        payload["orders"][str(order)] = summarise(measured[order], reference, xtb)
        payload["orders"][str(order)]["ms_per_ase_step_float32"] = ms_per_ase_step(args.model, starts[0], order)
    payload["load_average_1min"] = os.getloadavg()[0]  # other jobs on the cores slow every timing alike
    Path(f"{args.out}.json").write_text(json.dumps(payload, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
