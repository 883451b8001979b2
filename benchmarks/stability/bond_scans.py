"""Energy to the collapse criterion along every heavy-atom bond, next to GFN2-xTB (issue 12, acac).

Also, for a proton the data shows on either of two atoms (acetylacetone's enol H), the energy
along a straight-line transfer from its donor to 1.0 Å from the other partner (rigid frame).

For every bond between two heavy atoms (C-C, C-O) of every ``--every``-th data frame, one of its
atoms is moved rigidly along the bond until the bond is 0.5 Å longer (``stretch``) or shorter
(``compress``) than its mean over the data, the collapse criterion. The highest energy on the way
is that bond's barrier to collapse. GFN2-xTB on the same geometries gives the physical scale (another
level of theory: compare orders of magnitude, not meV). A model whose barriers fall well below
xTB's has a low road to breaking that bond in MD.

    python benchmarks/stability/bond_scans.py --data ../shared/data/acac/train_300K.xyz \\
        --out benchmarks/stability/acac_300K/bond_scans.json NAME=model.pt ...
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
from diagnose import energy_and_forces, stretched  # noqa: E402

from remul_ff.data.bonds import shared_atom, watched_bonds  # noqa: E402
from remul_ff.data.off_equilibrium import xtb_labels  # noqa: E402
from remul_ff.models import load_model  # noqa: E402

POINTS = 12  # geometries per scan


def scans(frames, every: int) -> list[dict]:
    """One scan per heavy-atom bond, frame and direction: ``{bond, direction, geometries, numbers}``."""
    pairs, groups, reference = watched_bonds(frames[0], frames)
    out = []
    for frame in frames[::every]:
        for g, (i, j) in zip(groups, pairs):
            if 1 in (frame.numbers[i], frame.numbers[j]) or np.sum(groups == g) > 1:
                continue
            r0 = frame.get_distance(i, j)
            name = f"{frame.get_chemical_symbols()[i]}{i}-{frame.get_chemical_symbols()[j]}{j}"
            for direction, sign in (("stretch", 1), ("compress", -1)):
                lengths = np.linspace(r0, reference[g] + sign * 0.5, POINTS)
                out.append(
                    {
                        "bond": name,
                        "direction": direction,
                        "numbers": frame.numbers,
                        "geometries": stretched(frame.positions, i, j, lengths),
                    }
                )
    return out


def transfer_scans(frames, every: int) -> list[dict]:
    """A shared proton moved on a straight line from its donor to 1.0 Å from the other partner."""
    pairs, groups, _ = watched_bonds(frames[0], frames)
    out = []
    for g in [g for g in set(groups.tolist()) if np.sum(groups == g) == 2]:
        hub = shared_atom(pairs[groups == g])
        partners = [int(k) for pair in pairs[groups == g] for k in pair if k != hub]
        for frame in frames[::every]:
            donor, acceptor = sorted(partners, key=lambda k: frame.get_distance(hub, k))
            end = frame.positions[acceptor] + 1.0 * _unit(frame.positions[donor] - frame.positions[acceptor])
            t = np.linspace(0, 1, 21)[:, None]
            geometries = np.repeat(frame.positions[None], len(t), axis=0)
            geometries[:, hub] = (1 - t) * frame.positions[hub] + t * end
            out.append({"bond": f"H{hub} transfer", "direction": "", "numbers": frame.numbers, "geometries": geometries})
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def barriers(energy_of, all_scans: list[dict]) -> np.ndarray:
    """Highest energy (eV) above the scan's first geometry, per scan."""
    return np.array([float((e - e[0]).max()) for e in (energy_of(s["geometries"], s["numbers"]) for s in all_scans)])


def summary(values: np.ndarray, all_scans: list[dict], reference: np.ndarray) -> dict:
    """Per bond and direction: median barrier and the 5th percentile of barrier / xTB barrier."""
    out = {}
    for key in sorted({(s["bond"], s["direction"]) for s in all_scans}):
        mask = np.array([(s["bond"], s["direction"]) == key for s in all_scans])
        ratio = values[mask] / reference[mask]
        out[" ".join(key).strip()] = {
            "median_eV": float(np.median(values[mask])),
            "min_eV": float(values[mask].min()),
            "ratio_to_xtb_median": float(np.median(ratio)),
            "ratio_to_xtb_min": float(ratio.min()),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=model.pt")
    parser.add_argument("--data", required=True, help="the training data (the reference for mean bond lengths)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--every", type=int, default=25, help="use every N-th frame (default 25)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    frames = read(args.data, ":")
    all_scans = scans(frames, args.every) + transfer_scans(frames, args.every)
    xtb = barriers(lambda g, z: np.array([xtb_labels(x, z, "GFN2-xTB")[0] for x in g]), all_scans)
    result = {"command": " ".join(["python", *sys.argv]), "scans": len(all_scans), "xtb": summary(xtb, all_scans, xtb), "models": {}}
    for name, path in (m.split("=", 1) for m in args.models):
        model = load_model(path, "cpu", torch.float64)
        values = barriers(lambda g, z, model=model: energy_and_forces(model, g, z)[0], all_scans)
        result["models"][name] = {
            "model": path,
            "below_half_of_xtb": int((values < 0.5 * xtb).sum()),
            "bonds": summary(values, all_scans, xtb),
        }
        print(name, result["models"][name]["below_half_of_xtb"], "of", len(all_scans), "scans below half of xTB's barrier", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
