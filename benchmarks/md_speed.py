"""MD speed on this CPU, all in one run: remul-ff's ASE calculator, batched MD, and MACE side by side.

Measured:

* ms per MD step through the ASE calculator (VelocityVerlet) on ethanol (9 atoms) and 3BPA
  (27 atoms), float32 and float64, for remul-ff and for MACE (128x0e+128x1o, r_max 5 Å), and for
  remul-ff's AOTInductor-compiled calculator (``REMULCalculator(..., compile=True)``, float32);
* batched MD throughput in replica-steps/s for 1, 8, 64, 256 and 1024 ethanol replicas;
* the speed-up of 64 batched replicas over the single-replica ASE loop.

Run from the repository root (the MACE part needs a venv with mace-torch, see mace_speed_helper.py)::

    python benchmarks/md_speed.py --model runs/accuracy/remul-fixed/model.pt --mace-python ../mace-venv/bin/python

(``--replicas`` sets the batched sizes; the compiled calculator needs g++ and compiles once per model, ~1 min.)

Writes ``benchmarks/results/md_speed.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _common import RESULTS, write_results
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet

from remul_ff.calculators import REMULCalculator
from remul_ff.md import MDSettings, run_md
from remul_ff.models import build_model, hyperparameters
from remul_ff.models.files import MODEL_FILE_KIND, load_file

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
STRUCTURES = {"ethanol (9 atoms)": DATA / "rmd17_ethanol" / "train.xyz", "3BPA (27 atoms)": DATA / "3bpa" / "train_300K.xyz"}


def calculator_for(model_path: str, numbers, dtype: str, compile: bool = False) -> REMULCalculator:
    """The trained model, or, for elements it was not trained on (N in 3BPA), an untrained model
    with the same hyperparameters: weights do not change the speed."""
    calculator = REMULCalculator(model_path, default_dtype=dtype, compile=compile)
    if set(numbers) <= set(calculator.model.elements.elements.tolist()):
        return calculator
    payload = load_file(model_path, MODEL_FILE_KIND)
    model = build_model(payload["model_kind"], payload["hyperparameters"], sorted(set(numbers)), {})
    return REMULCalculator(model=model, default_dtype=dtype, compile=compile)


def calculator_ms_per_step(model_path: str, path: Path, dtype: str, steps: int, compile: bool = False) -> float:
    atoms = read(path, index=0)
    atoms.pbc = False
    atoms.calc = calculator_for(model_path, atoms.numbers.tolist(), dtype, compile)
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(5)
    start = time.perf_counter()
    dyn.run(steps)
    return 1e3 * (time.perf_counter() - start) / steps


def batched_throughput(model_path: str, replicas: int, steps: int, dtype: str) -> float:
    calculator = REMULCalculator(model_path, default_dtype=dtype)
    starts = read(STRUCTURES["ethanol (9 atoms)"], index=f":{replicas}")
    starts = [starts[k % len(starts)] for k in range(replicas)]
    settings = MDSettings(temperature=300, timestep_fs=0.5, total_time_fs=0.5 * steps, thermostat="nve", write_interval=0)
    run_md(calculator.model, starts, settings, None, progress=False)  # warm-up, same shapes
    result = run_md(calculator.model, starts, settings, None, progress=False)
    return result.replica_steps_per_s


def mace_ms_per_step(python: str, steps: int) -> dict:
    structures = json.dumps({name: str(path) for name, path in STRUCTURES.items()})
    helper = Path(__file__).with_name("mace_speed_helper.py")
    out = subprocess.run([python, str(helper), structures, str(steps)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(results: dict) -> str:
    mace = results.get("mace", {}).get("ms_per_step", {})
    compiled = results.get("calculator_compiled_ms_per_step", {})
    rows = [f"remul-ff model: {results['model_hyperparameters']}; torch threads: {torch.get_num_threads()}\n",
            "| structure | dtype | remul-ff (ms/step) | remul-ff compiled (ms/step) | MACE (ms/step) | MACE / remul-ff | MACE / compiled |",
            "|---|---|---|---|---|---|---|"]
    for key, ms in results["calculator_ms_per_step"].items():
        other, fast = mace.get(key), compiled.get(key)
        cells = [_ms(ms), _ms(fast), _ms(other), _ratio(other, ms), _ratio(other, fast)]
        rows.append(f"| {key.split('/')[0]} | {key.split('/')[1]} | " + " | ".join(cells) + " |")
    rows += ["", f"Batched NVE MD, ethanol, {results['batched_dtype']}:", "", "| replicas | replica-steps/s |", "|---|---|"]
    rows += [f"| {r} | {v:.0f} |" for r, v in results["batched_replica_steps_per_s"].items()]
    rows += ["", f"64 batched replicas vs the single-replica ASE loop ({results['batched_dtype']}): "
             f"**{results['speedup_64_vs_ase_loop']:.1f}x** more replica-steps/s."]
    return "\n".join(rows) + "\n"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ratio(slow: float | None, fast: float | None) -> str:
    return f"{slow / fast:.1f}x" if slow and fast else "n/a"


def plot(results: dict) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    replicas = [int(r) for r in results["batched_replica_steps_per_s"]]
    ax.plot(replicas, list(results["batched_replica_steps_per_s"].values()), "o-", label="remul-ff batched MD")
    ase_rate = 1e3 / results["calculator_ms_per_step"][f"ethanol (9 atoms)/{results['batched_dtype']}"]
    ax.axhline(ase_rate, color="gray", ls="--", label="remul-ff ASE loop (1 replica)")
    mace = results.get("mace", {}).get("ms_per_step", {}).get(f"ethanol (9 atoms)/{results['batched_dtype']}")
    if mace:
        ax.axhline(1e3 / mace, color="red", ls=":", label="MACE ASE loop (1 replica)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("replicas")
    ax.set_ylabel("replica-steps / s")
    ax.set_title("Ethanol MD throughput on this CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "md_speed.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="remul-ff model.pt (the accuracy benchmark's best model)")
    parser.add_argument("--mace-python", help="python of a venv with mace-torch (omit to skip MACE)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batched-steps", type=int, default=100)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64, 256, 1024])
    parser.add_argument("--batched-dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    results = {"model": args.model, "model_hyperparameters": hyperparameters(REMULCalculator(args.model).model),
               "batched_dtype": args.batched_dtype, "calculator_ms_per_step": {}}
    for name, path in STRUCTURES.items():
        for dtype in ("float32", "float64"):
            results["calculator_ms_per_step"][f"{name}/{dtype}"] = calculator_ms_per_step(args.model, path, dtype, args.steps)
    results["calculator_compiled_ms_per_step"] = {
        f"{name}/float32": calculator_ms_per_step(args.model, path, "float32", args.steps, compile=True) for name, path in STRUCTURES.items()
    }
    results["batched_replica_steps_per_s"] = {
        str(r): batched_throughput(args.model, r, args.batched_steps, args.batched_dtype) for r in args.replicas
    }
    ase_loop = 1e3 / results["calculator_ms_per_step"][f"ethanol (9 atoms)/{args.batched_dtype}"]
    results["speedup_64_vs_ase_loop"] = results["batched_replica_steps_per_s"]["64"] / ase_loop
    if args.mace_python:
        results["mace"] = mace_ms_per_step(args.mace_python, max(args.steps // 4, 20))
    write_results("md_speed", results, markdown(results))
    plot(results)
    print(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
