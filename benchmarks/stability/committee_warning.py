"""Does a committee's force deviation warn before a collapse? Measured on saved MD trajectories.

(`remul-ff compare` does the same for a model with ``committee:`` in its spec entry; this script
judges an MD folder on its own, with any committee.)

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
import numpy as np
import torch

from remul_ff.compare.report import plot_committee_warnings
from remul_ff.md.analysis import committee_warnings
from remul_ff.models import load_model
from remul_ff.models.committee import Committee, frame_deviations


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
    collapses = sorted(json.loads((md / "collapses.json").read_text()), key=lambda c: c["replica"])
    series = {int(p.stem.split("_")[1]): frame_deviations(committee, ase.io.read(p, ":")) for p in sorted(md.glob("replica_*.traj"))}
    warning = committee_warnings(series, collapses, args.frame_ps)
    collapsed = {c["replica"] for c in collapses}
    healthy = np.concatenate([s for r, s in series.items() if r not in collapsed])
    result = {
        "command": " ".join(["python", *sys.argv]),
        "committee": args.committee,
        "healthy_frames": warning["healthy_frames"],
        "healthy_percentiles_eV_A": {q: float(np.percentile(healthy, q)) for q in (50, 99, 99.9)},
        "threshold_eV_A": warning["threshold_eV_A"],
        "collapses": warning["events"],
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    plotted = {**warning, "frame_ps": args.frame_ps, "deviations_eV_A": {str(r): s.tolist() for r, s in series.items()}}
    plot_committee_warnings({md.parent.name: plotted}, Path(args.out).with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=1))


if __name__ == "__main__":
    main()
