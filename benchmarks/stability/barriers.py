"""Energy to the collapse criterion for any model files: the diagnosis's barrier test on its own.

For each X-H bond of every 20th rMD17 ethanol frame, the highest energy along a rigid stretch of
the bond to (mean length + 0.5 Å), as in ``diagnose.py`` (which also scans and runs hot MD). A
cheap proxy for bond-breaking in 500 K MD, used to compare training recipes before the long MD.

    python benchmarks/stability/barriers.py --data ../shared/data/rmd17_ethanol/train.xyz \
        --out benchmarks/stability/diagnosis/barriers_ablation.json NAME=model.pt ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from ase.io import read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnose import barriers_to_collapse  # noqa: E402

from remul_ff.data.bonds import mean_bond_lengths, molecular_bonds  # noqa: E402
from remul_ff.models import load_model  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=model.pt")
    parser.add_argument("--data", required=True, help="rMD17 ethanol extxyz (the reference for mean bond lengths)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    frames = read(args.data, ":")
    bonds = molecular_bonds(frames[0])
    mean = mean_bond_lengths(frames, bonds, frames[0].numbers)
    result = {"command": " ".join(["python", *sys.argv]), "models": {}}
    for name, path in (m.split("=", 1) for m in args.models):
        barriers = np.array(barriers_to_collapse(load_model(path, "cpu", torch.float64), frames[::20], bonds, mean))
        result["models"][name] = {
            "model": path,
            "barrier_min_eV": float(barriers.min()),
            "barrier_p5_eV": float(np.percentile(barriers, 5)),
            "barrier_median_eV": float(np.median(barriers)),
            "barriers_eV": barriers.tolist(),
        }
        print(name, {k: round(v, 3) for k, v in result["models"][name].items() if k.startswith("barrier_")}, flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
