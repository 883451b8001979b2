"""NVE drift of multiple time stepping for several models with a direct-force head, side by side.

For each model and each ``k`` it runs :func:`mts_speed.nve_drift` (``remul-ff md``'s multiple time
stepping: float64, 0.5 fs, NVE, compiled, ``--drift-replicas`` rMD17 ethanol frames at 300 K for
``--drift-time-ps``) in its own folder under ``benchmarks/direct_forces/nve/<label>/k<k>`` (ignored by git;
an interrupted run continues), and reports the mean and largest |drift| over the replicas. Models whose
energies are the same (a head fitted with ``train.trainable: direct_forces_head``) share ``k = 1``, which
is velocity Verlet on the conservative forces: give ``--ks`` without 1 for all but the first.

Run from the repository root, e.g.::

    python benchmarks/mts_drift.py --model labels=benchmarks/direct_forces/runs/augment_30min_seed0/model.pt \\
        --model fitted=benchmarks/direct_forces/runs/augment-headfit_45min_seed0/model.pt --ks 2 4 8

Writes ``benchmarks/results/mts_drift.{json,md}`` (rows of earlier runs of other models are kept).
"""

from __future__ import annotations

import argparse
import json

import torch
from perf._common import RESULTS, command_line, write_results
from perf.mts_speed import nve_drift


def markdown(rows: list[dict]) -> str:
    lines = [
        "NVE, float64, 0.5 fs, ethanol from rMD17 frames at 300 K: |drift| of the conserved energy (meV/atom/ps) over the replicas.",
        "",
        "| model | file | k | replicas | time (ps) | mean |drift| | largest | collapses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['model']} | {r['k']} | {r['replicas']} | {r['time_ps']:g} | {r['mean_abs']:.4f} | {r['max_abs']:.4f} "
            f"| {r['collapses']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="LABEL=PATH of a model.pt with a direct-force head")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--drift-time-ps", type=float, default=50.0)
    parser.add_argument("--drift-replicas", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for label, path in (item.split("=", 1) for item in args.model):
        for k in args.ks:
            drift = nve_drift(path, k, args, RESULTS.parent / "direct_forces" / "nve" / label / f"k{k}")
            row = {"label": label, "model": path, "k": k, "replicas": args.drift_replicas, "time_ps": args.drift_time_ps, **drift}
            rows = [r for r in earlier_rows() if (r["label"], r["k"]) != (label, k)] + [{**row, "command": command_line()}]
            write_results("mts_drift", {"rows": rows}, markdown(rows))
            print(markdown([row]), flush=True)


def earlier_rows() -> list[dict]:
    """The rows already in the results file, read just before each write (another run may have added some)."""
    path = RESULTS / "mts_drift.json"
    return json.loads(path.read_text())["rows"] if path.exists() else []


if __name__ == "__main__":
    main()
