"""Collapses per replica-ps of stability runs, from their restart files (finished or not).

``remul-ff compare --model NAME`` runs one model's MD and stops before the report; this counts what its
run folder holds: the step of the last restart file, the collapses the monitor recorded, the exposure
(each replica's time until its collapse or until that step) and the exact Poisson 95% interval; with
several folders also their sum. The NVE drift of each model's ``nve`` run is the slope of a line
fitted to its total energy. Usage (repository root)::

    python benchmarks/stability/summarize_md.py benchmarks/stability/rmd17_ethanol_500K/augment_60min \\
        benchmarks/stability/rmd17_ethanol_500K/augment_60min_seed1
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import ase.io
import numpy as np
import torch

from remul_ff.md.analysis import poisson_rate_ci


def md_exposure(folder: Path) -> tuple[int, float, list[dict], float]:
    """``(step, replica-ps, collapses, ps per replica)`` of the MD in ``folder / "md"``."""
    restart = torch.load(folder / "md" / "restart.pt", weights_only=False)
    collapses = json.loads((folder / "md" / "collapses.json").read_text()) if (folder / "md" / "collapses.json").exists() else []
    rows = list(csv.DictReader(open(folder / "md" / "thermo.csv")))
    replicas = 1 + max(int(row["replica"]) for row in rows)
    ps_per_step = float(rows[-1]["time_ps"]) / float(rows[-1]["step"])
    reached = restart["step"] * ps_per_step
    until = {c["replica"]: min(c["time_ps"], reached) for c in collapses}
    return restart["step"], sum(until.get(r, reached) for r in range(replicas)), collapses, reached


def nve_drift(folder: Path, atoms: int) -> tuple[float, float] | None:
    """``(ps, meV/atom/ps)`` of the ``nve`` run in ``folder``, or ``None`` without one."""
    path = folder / "nve" / "thermo.csv"
    if not path.exists():
        return None
    rows = list(csv.DictReader(open(path)))
    t, e = (np.array([float(r[key]) for r in rows]) for key in ("time_ps", "e_tot_eV"))
    return float(t[-1]), 1000 * float(np.polyfit(t, e, 1)[0]) / atoms


def line(name: str, exposure: float, collapses: int) -> str:
    low, high = poisson_rate_ci(collapses, exposure / 1000)
    rate = f"{1000 * collapses / exposure:.2f} per 1000 replica-ps, exact 95% CI [{low:.2f}, {high:.2f}]"
    return f"{name}: {exposure:.1f} replica-ps, {collapses} collapse(s): {rate}"


def main(folders: list[Path]) -> None:
    total_exposure, total_collapses = 0.0, 0
    for folder in folders:
        step, exposure, collapses, reached = md_exposure(folder)
        total_exposure, total_collapses = total_exposure + exposure, total_collapses + len(collapses)
        print(f"{line(folder.name, exposure, len(collapses))} (restart step {step}, {reached:g} ps per replica); {collapses}")
        drift = nve_drift(folder, len(ase.io.read(folder / "md" / "replica_000.traj", 0)))
        if drift is not None:
            print(f"  NVE, {drift[0]:g} ps: drift {drift[1]:+.3f} meV/atom/ps")
    if len(folders) > 1:
        print(line("together", total_exposure, total_collapses))


if __name__ == "__main__":
    main([Path(arg) for arg in sys.argv[1:]])
