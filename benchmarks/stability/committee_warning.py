"""Does a committee's force deviation warn before a collapse? Measured on saved MD trajectories.

For every saved frame of every replica of an MD run, the committee's largest per-atom force
deviation (``remul_ff.models.committee.max_force_deviation``, eV/Å). The alarm threshold is the
99.9th percentile over the frames of replicas that never collapsed (a false-alarm rate of 0.1% of
frames); a collapse is "warned" when a frame before it passes the threshold, and the lead time is
how long before the collapse the first such frame came.

    python benchmarks/stability/committee_warning.py benchmarks/stability/rmd17_ethanol_500K/remul/md \\
        --committee benchmarks/stability/rmd17_ethanol/remul/model.pt \\
            benchmarks/stability/rmd17_ethanol_500K/remul_offeq_w001/model.pt \\
            benchmarks/stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt \\
            benchmarks/stability/rmd17_ethanol_500K/remul_offeq/model.pt \\
        --frame-ps 0.05 --out benchmarks/stability/diagnosis/committee_warning.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ase.io
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from remul_ff.data.batch import Structure, collate
from remul_ff.models import load_model
from remul_ff.models.committee import Committee, max_force_deviation


def replica_deviations(committee: Committee, path: Path) -> np.ndarray:
    """``[frames]`` committee force deviation of every saved frame of one replica."""
    frames = ase.io.read(path, ":")
    batch = collate([Structure(a.positions - a.positions.mean(0), a.numbers) for a in frames], dtype=torch.float64)
    return max_force_deviation(committee, batch).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("md", help="MD output folder (replica_*.traj and collapses.json)")
    parser.add_argument("--committee", nargs="+", required=True, help="model.pt files")
    parser.add_argument("--frame-ps", type=float, required=True, help="simulated time between saved frames, ps")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    committee = Committee([load_model(p, "cpu", torch.float64) for p in args.committee])
    md = Path(args.md)
    collapses = {c["replica"]: c for c in json.loads((md / "collapses.json").read_text())}
    series = {int(p.stem.split("_")[1]): replica_deviations(committee, p) for p in sorted(md.glob("replica_*.traj"))}
    healthy = np.concatenate([s for r, s in series.items() if r not in collapses])
    threshold = float(np.percentile(healthy, 99.9))
    events = [_event(c, series[r], threshold, args.frame_ps) for r, c in sorted(collapses.items())]
    result = {"command": " ".join(["python", *sys.argv]), "committee": args.committee, "healthy_frames": int(healthy.size),
              "healthy_percentiles_eV_A": {q: float(np.percentile(healthy, q)) for q in (50, 99, 99.9)},
              "threshold_eV_A": threshold, "collapses": events}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    _plot(series, collapses, threshold, args.frame_ps, Path(args.out).with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=1))


def _event(collapse: dict, deviations: np.ndarray, threshold: float, frame_ps: float) -> dict:
    times = np.arange(len(deviations)) * frame_ps
    before = times < collapse["time_ps"]
    over = np.nonzero((deviations > threshold) & before)[0]
    return {"replica": collapse["replica"], "collapse_ps": collapse["time_ps"], "reason": collapse["reason"],
            "warned": bool(over.size), "lead_time_ps": float(collapse["time_ps"] - times[over[0]]) if over.size else None,
            "deviation_last_frames_eV_A": deviations[before][-5:].tolist()}


def _plot(series: dict, collapses: dict, threshold: float, frame_ps: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for replica, deviations in series.items():
        times = np.arange(len(deviations)) * frame_ps
        style = {"color": "C3", "lw": 1.5, "label": f"replica {replica} (collapsed)"} if replica in collapses else {"color": "0.7", "lw": 0.5}
        ax.plot(times, deviations, **style)
    for c in collapses.values():
        ax.axvline(c["time_ps"], color="C3", ls=":")
    ax.axhline(threshold, color="k", ls="--", label="99.9% of healthy frames")
    ax.set(xlabel="time (ps)", ylabel="committee max force deviation (eV/Å)", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
