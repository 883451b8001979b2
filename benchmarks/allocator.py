"""Does keeping freed memory (``remul_ff.utils.memory.keep_freed_memory``) speed up MD steps? (issue 13)

Each measurement runs in a fresh process, once with glibc's default allocator settings
(``REMUL_FF_KEEP_FREED_MEMORY=0``) and once with the setting the calculator and the MD engine now
make, alternating which goes first, for ``--rounds`` rounds. Reported per case: the median and every
round's time per step, and the page faults per step (``getrusage``'s minor faults over the timed steps).

Cases: the compiled ASE step (VelocityVerlet, 0.5 fs, float32) of the first frame of 3BPA and of
rMD17 ethanol, and 64 batched ethanol replicas (NVE, eager, float32), with ``--threads`` torch threads.

Usage::

    python benchmarks/allocator.py --ethanol-model stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt \\
        --3bpa-model stability/3bpa_300K/remul_offeq/model.pt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch
from perf._common import write_results
from perf.md_speed import STRUCTURES, ase_step_cost, batched_cost

MODES = {"glibc default": "0", "keep freed memory": "1"}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.case == "batched":
        print(json.dumps(batched_cost(args.ethanol_model, 64, args.batched_steps, "float32")))
    else:
        model = args.ethanol_model if args.case.startswith("ethanol") else args.bpa_model
        print(json.dumps(ase_step_cost(model, STRUCTURES[args.case], "float32", args.steps, compile=True, warmup=20)))


def measure(case: str, mode: str, argv: list[str]) -> dict:
    env = {**os.environ, "REMUL_FF_KEEP_FREED_MEMORY": MODES[mode]}
    out = subprocess.run([sys.executable, __file__, *argv, "--child", case], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(results: dict) -> str:
    rows = [
        f"Torch threads: {results['threads']}; medians over {results['rounds']} rounds (each a fresh process).",
        "",
        "| case | allocator | per step (median) | rounds | page faults per step |",
        "|---|---|---|---|---|",
    ]
    for case, modes in results["cases"].items():
        key = "replica_steps_per_s" if case == "batched" else "ms_per_step"
        unit = "replica-steps/s" if case == "batched" else "ms"
        for mode, runs in modes.items():
            values = [r[key] for r in runs]
            faults = statistics.median(r["faults_per_step"] for r in runs)
            rows.append(
                f"| {case} | {mode} | {statistics.median(values):.{0 if case == 'batched' else 2}f} {unit} | "
                + ", ".join(f"{v:.{0 if case == 'batched' else 2}f}" for v in values)
                + f" | {faults:.0f} |"
            )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ethanol-model", required=True)
    parser.add_argument("--3bpa-model", dest="bpa_model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batched-steps", type=int, default=50)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.case = args.child
        return child(args)
    argv = [
        "--ethanol-model",
        args.ethanol_model,
        "--3bpa-model",
        args.bpa_model,
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--batched-steps",
        str(args.batched_steps),
    ]
    cases = {case: {mode: [] for mode in MODES} for case in ("3BPA (27 atoms)", "ethanol (9 atoms)", "batched")}
    for k in range(args.rounds):
        for case, modes in cases.items():
            for mode in list(MODES) if k % 2 == 0 else list(MODES)[::-1]:
                modes[mode].append(measure(case, mode, argv))
    results = {"threads": args.threads, "rounds": args.rounds, "cases": cases}
    write_results(f"allocator_{args.threads}threads", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
