"""Is the model's energy right where its MD went before a collapse? (issue 12, diagnosis)

For every replica of a ``compare`` MD folder whose saved frames break a watched bond (the
protocol's criterion, :func:`remul_ff.data.bonds.watched_bonds`) or that the MD's monitor stopped,
the energy of the last saved frame before the collapse relative to the replica's starting frame,
by every model given and by GFN2-xTB. A model that ran there at 300 K thinks these geometries cost a
few kT; if xTB (and the other model) put them eV higher, the MD found a spurious low-energy channel.

    python benchmarks/stability/precollapse_energies.py benchmarks/stability/acac_300K/remul_offeq/md \\
        --data ../shared/data/acac/train_300K.xyz --out benchmarks/stability/acac_300K/precollapse.json NAME=model.pt ...
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
from diagnose import energy_and_forces  # noqa: E402

from remul_ff.data.bonds import group_lengths, group_name, watched_bonds  # noqa: E402
from remul_ff.data.off_equilibrium import xtb_labels  # noqa: E402
from remul_ff.md.analysis import first_bond_break  # noqa: E402
from remul_ff.models import load_model  # noqa: E402


def collapsed_replicas(md_dir: Path, reference, tolerance: float = 0.5) -> list[dict]:
    """Start and last saved frame before the collapse of each replica that collapsed.

    A replica collapsed when a saved frame breaks a watched bond, or when the monitor stopped it
    between two saved frames (its trajectory is shorter than the longest one).
    """
    trajectories = {path.stem: read(path, ":") for path in sorted(md_dir.glob("replica_*.traj"))}
    full = max(len(frames) for frames in trajectories.values())
    out = []
    for name, frames in trajectories.items():
        pairs, groups, lengths = watched_bonds(frames[0], reference)
        found = first_bond_break([a.positions for a in frames], pairs, tolerance, lengths, groups)
        last = found[0] - 1 if found else len(frames) - 1
        if (found is None and len(frames) == full) or last < 1:
            continue
        deviation = np.abs(group_lengths(frames[last].positions, pairs, groups) - lengths)
        out.append(
            {
                "replica": name,
                "frame": last,
                "bond": group_name(frames[0].get_chemical_symbols(), pairs[groups == deviation.argmax()]),
                "deviation_A": float(deviation.max()),
                "numbers": frames[0].numbers,
                "geometries": np.stack([frames[0].positions, frames[last].positions]),
            }
        )
    return out


def relative_energies(energy_of, events: list[dict]) -> list[float]:
    """Energy (eV) of the last frame before the collapse above the start frame, per event."""
    return [float(np.diff(energy_of(ev["geometries"], ev["numbers"]))[0]) for ev in events]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("md", help="a compare MD folder (replica_*.traj)")
    parser.add_argument("models", nargs="+", help="NAME=model.pt")
    parser.add_argument("--data", required=True, help="the training data (the reference of the criterion)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    events = collapsed_replicas(Path(args.md), read(args.data, ":"))
    energies = {"xtb": relative_energies(lambda g, z: np.array([xtb_labels(x, z, "GFN2-xTB")[0] for x in g]), events)}
    for name, path in (m.split("=", 1) for m in args.models):
        model = load_model(path, "cpu", torch.float64)
        energies[name] = relative_energies(lambda g, z, m=model: energy_and_forces(m, g, z)[0], events)
    rows = [
        {
            **{k: ev[k] for k in ("replica", "frame", "bond", "deviation_A")},
            **{f"{name}_eV": values[k] for name, values in energies.items()},
        }
        for k, ev in enumerate(events)
    ]
    medians = {name: float(np.median(values)) if values else None for name, values in energies.items()}
    Path(args.out).write_text(
        json.dumps({"command": " ".join(["python", *sys.argv]), "events": rows, "median_eV_above_start": medians}, indent=1) + "\n"
    )
    for row in rows:
        print(row["replica"], row["bond"], round(row["deviation_A"], 2), {k: round(row[k], 2) for k in row if k.endswith("_eV")})


if __name__ == "__main__":
    main()
