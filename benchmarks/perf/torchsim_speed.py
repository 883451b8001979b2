"""torch-sim + remul-ff next to remul-ff's own MD engine: same model, replicas, thermostat and machine.

Both run Langevin NVT at 500 K, 0.5 fs, on R ethanol replicas (rMD17 frames) in one batch, with the
same model file and dtype, eagerly (no ``torch.compile``), after an untimed warm-up run. Reported:
replica-steps/s for each, and their ratio, for each replica count. Our engine also checks bonds
every ``--check-interval`` steps (torch-sim has no such monitor); the thermo and trajectory
writers are off on both sides.

    python benchmarks/perf/torchsim_speed.py --model benchmarks/stability/rmd17_ethanol_500K/remul_offeq_w001/model.pt \\
        --data ../shared/data/rmd17_ethanol/train.xyz

Writes ``benchmarks/results/torchsim_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch_sim as ts
from _common import write_results
from ase.io import read

from remul_ff.integrations.torchsim import REMULTorchSimModel
from remul_ff.md import MDSettings, run_md

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def own_engine_rate(model, starts, steps: int, check_interval: int) -> float:
    """Replica-steps/s of ``remul_ff.md.run_md`` (warm-up run first)."""
    settings = MDSettings(
        temperature=500, timestep_fs=0.5, total_time_fs=0.5 * steps, thermostat="langevin", write_interval=0, check_interval=check_interval
    )
    run_md(model, starts, MDSettings(**{**vars(settings), "total_time_fs": 5.0}), None, progress=False)
    return run_md(model, starts, settings, None, progress=False).replica_steps_per_s


def torchsim_rate(model: REMULTorchSimModel, starts, steps: int) -> float:
    """Replica-steps/s of ``torch_sim.integrate`` with its Langevin integrator (warm-up run first)."""

    def run(n):
        return ts.integrate(system=starts, model=model, integrator=ts.nvt_langevin, n_steps=n, temperature=500.0, timestep=0.0005, seed=0)

    run(10)
    start = time.perf_counter()
    run(steps)
    return len(starts) * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="ethanol frames to start the replicas from")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--check-interval", type=int, default=10)
    args = parser.parse_args()
    frames = read(args.data, ":")
    model = REMULTorchSimModel(args.model, device="cpu", dtype=DTYPES[args.dtype])
    rows = []
    for replicas in args.replicas:
        starts = [frames[k % len(frames)].copy() for k in range(replicas)]
        own, theirs = own_engine_rate(model.model, starts, args.steps, args.check_interval), torchsim_rate(model, starts, args.steps)
        rows.append(
            {
                "replicas": replicas,
                "remul_ff_md_replica_steps_per_s": own,
                "torch_sim_replica_steps_per_s": theirs,
                "torch_sim_over_remul_ff_md": theirs / own,
            }
        )
        print(rows[-1], flush=True)
    table = "| replicas | remul-ff md (replica-steps/s) | torch-sim (replica-steps/s) | torch-sim / remul-ff md |\n|---|---|---|---|\n"
    table += "".join(
        f"| {r['replicas']} | {r['remul_ff_md_replica_steps_per_s']:.0f} | {r['torch_sim_replica_steps_per_s']:.0f} | "
        f"{r['torch_sim_over_remul_ff_md']:.2f} |\n"
        for r in rows
    )
    write_results(
        "torchsim_speed",
        {"model": args.model, "dtype": args.dtype, "steps": args.steps, "rows": rows},
        f"Langevin 500 K, 0.5 fs, {args.steps} steps, ethanol, {args.dtype}, eager.\n\n{table}",
    )


if __name__ == "__main__":
    main()
