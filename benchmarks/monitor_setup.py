"""How long the collapse monitor takes to set up for large ensembles (one CPU thread).

Times ``CollapseMonitor(state, ...)`` on ``N`` rattled ethanol replicas, whose bonds are found for
all replicas at once (``data.bonds.replica_bonds``), next to what the monitor did before: one ASE
neighbour list per replica (``molecular_bonds`` in a loop, the old set-up's dominant cost). Median
of ``--repeat`` runs each. Run from the repository root::

    python benchmarks/monitor_setup.py
"""

from __future__ import annotations

import argparse

import torch
from perf._common import median_seconds, write_results
from perf.gpu_speed import replicas_of

from remul_ff.data.bonds import molecular_bonds
from remul_ff.md.monitor import CollapseMonitor
from remul_ff.md.state import state_from_atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for n in args.replicas:
        starts = replicas_of(n)
        state = state_from_atoms(starts, "cpu", torch.float32)
        ase_loop = lambda state=state: [molecular_bonds(atoms) for _, atoms in state.replica_atoms()]
        rows[str(n)] = {
            "monitor_setup_s": median_seconds(lambda state=state: CollapseMonitor(state, 5000.0), args.repeat, warmup=0),
            "ase_neighbour_list_per_replica_s": median_seconds(ase_loop, args.repeat, warmup=0),
        }
        print(n, rows[str(n)], flush=True)
    lines = ["| replicas | monitor set-up (s) | one ASE neighbour list per replica (s) |", "|---|---|---|"]
    lines += [f"| {n} | {r['monitor_setup_s']:.2f} | {r['ase_neighbour_list_per_replica_s']:.2f} |" for n, r in rows.items()]
    write_results("monitor_setup", {"ethanol_replicas": rows, "repeat": args.repeat, "threads": 1}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
