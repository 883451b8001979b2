"""Multiple time stepping on this CPU: ms per step, NVE drift and batched throughput, beside the conservative paths.

One run times, for a model with a direct-force head (``model.direct_forces: true``), on ethanol (9 atoms)
and 3BPA (27 atoms), float32 and float64, every calculator in turn for ``--rounds`` rounds (medians):

* the plain ASE step (``VelocityVerlet``, eager calculator) and the AOTInductor-compiled one
  (``compile=True``): today's conservative paths;
* :class:`~remul_ff.integrations.MultipleTimeStepVerlet` on the compiled calculator for each ``k`` in
  ``--ks`` (ms per step averaged over the cycle: ``k - 1`` direct-force calls and one full call);
* MACE's ASE step (``--mace-python``, mace_speed_helper.py), the same structures;

then the NVE drift of ``remul-ff md``'s multiple time stepping (float64, 0.5 fs, ``--drift-time-ps`` per
replica, ``--drift-replicas`` rMD17 ethanol frames at 300 K) for each ``k`` (``k = 1`` is velocity
Verlet on the conservative forces), and 64 batched ethanol replicas with ``forces: mts`` against the
single-molecule ASE loop of the plain calculator.

Run from the repository root::

    python benchmarks/perf/mts_speed.py --model benchmarks/direct_forces/runs/remul_30min_seed0/model.pt \\
        --mace-python ../mace-venv/bin/python

Writes ``benchmarks/results/mts_speed.{json,md}`` and adds the ``mts_*`` keys to ``md_speed.json``
(with ``mts_command``; that file's other timings keep their own command).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, command_line, write_results
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet
from md_speed import STRUCTURES, calculator_for, package_version, peer_ms_per_step

from remul_ff.integrations import MultipleTimeStepVerlet
from remul_ff.md import MDSettings, run_md
from remul_ff.md.analysis import energy_drift_mev_per_atom_ps
from remul_ff.models import load_model

CALCULATORS: dict[tuple, object] = {}  # made once per model, structure, dtype and compilation (compiling takes minutes)


def ase_ms_per_step(model: str, path, dtype: str, steps: int, compile: bool, k: int = 0) -> float:
    """ms per ASE step from the first frame of ``path``: velocity Verlet (``k = 0``) or multiple time stepping."""
    atoms = read(path, index=0)
    key = (model, str(path), dtype, compile)
    if key not in CALCULATORS:
        CALCULATORS[key] = calculator_for(model, atoms.numbers.tolist(), dtype, compile)
    atoms.calc = CALCULATORS[key]
    dyn = VelocityVerlet(atoms, 0.5 * units.fs) if k == 0 else MultipleTimeStepVerlet(atoms, 0.5 * units.fs, k=k)
    dyn.run(2 * max(k, 1))
    steps = steps // max(k, 1) * max(k, 1)  # whole cycles
    start = time.perf_counter()
    dyn.run(steps)
    return 1e3 * (time.perf_counter() - start) / steps


def one_round(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every calculator once, on every structure and dtype."""
    keys = [(name, path, dtype) for name, path in STRUCTURES.items() for dtype in ("float32", "float64")]
    timings = {
        "plain": {f"{n}/{d}": ase_ms_per_step(args.model, p, d, args.steps, False) for n, p, d in keys},
        "compiled": {f"{n}/{d}": ase_ms_per_step(args.model, p, d, args.steps, True) for n, p, d in keys},
    }
    for k in args.ks:
        timings[f"mts k={k}"] = {f"{n}/{d}": ase_ms_per_step(args.model, p, d, args.steps, True, k) for n, p, d in keys}
    if args.mace_python:
        timings["MACE"] = peer_ms_per_step("mace_speed_helper.py", args.mace_python, max(args.steps // 4, 20))
    return timings


def timing_rounds(args: argparse.Namespace) -> list[dict]:
    """``args.rounds`` rounds, each kept in ``direct_forces/timing_rounds.json`` as soon as it is done, so that a
    killed run (the NVE runs take longest) keeps them; a rerun with the same model and ``--steps`` reuses them."""
    path = RESULTS.parent / "direct_forces" / "timing_rounds.json"
    key = {"model": args.model, "steps": args.steps, "ks": args.ks, "mace": bool(args.mace_python)}
    saved = json.loads(path.read_text()) if path.exists() else {}
    rounds = saved.get("rounds", []) if saved.get("key") == key else []
    while len(rounds) < args.rounds:
        rounds.append(one_round(args))
        path.write_text(json.dumps({"key": key, "rounds": rounds}, indent=1) + "\n")
    return rounds[: args.rounds]


def medians(rounds: list[dict], name: str) -> dict[str, float]:
    return {key: float(np.median([one[name][key] for one in rounds])) for key in rounds[0][name]}


def nve_drift(model: str, k: int, args: argparse.Namespace, out: Path | None = None) -> dict:
    """Mean and largest |drift| of the conserved energy over the replicas, meV/atom/ps (float64, 0.5 fs),
    run in ``out`` (default ``direct_forces/nve/k<k>``; an interrupted run continues there)."""
    frames = read(STRUCTURES["ethanol (9 atoms)"], index=f":{args.drift_replicas}")
    settings = MDSettings(
        temperature=300,
        timestep_fs=0.5,
        total_time_fs=args.drift_time_ps * 1e3,
        thermostat="nve",
        forces="mts",
        mts_k=k,
        thermo_interval=8,  # a multiple of every k timed: rows at the ends of cycles
        write_interval=0,
        compile=True,
        restart_every=4000,  # an interrupted run continues where it stopped
    )
    out = out or RESULTS.parent / "direct_forces" / "nve" / f"k{k}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_md(model, frames, settings, out, progress=False, resume=True)
    rows = list(csv.DictReader(open(out / "thermo.csv")))
    drifts = []
    for replica in range(len(frames)):
        mine = np.array([[float(r["time_ps"]), float(r["conserved_eV"])] for r in rows if int(r["replica"]) == replica])
        drifts.append(abs(energy_drift_mev_per_atom_ps(mine[:, 0], mine[:, 1], len(frames[replica]))))
    return {"mean_abs": float(np.mean(drifts)), "max_abs": float(np.max(drifts)), "collapses": len(result.collapses)}


def batched_64(model: str, forces: str, k: int, steps: int) -> float:
    """Replica-steps/s of 64 ethanol replicas (float32, NVE, compiled), from the second of two runs."""
    frames = read(STRUCTURES["ethanol (9 atoms)"], index=":64")
    settings = MDSettings(
        timestep_fs=0.5, total_time_fs=0.5 * steps, thermostat="nve", write_interval=0, compile=True, forces=forces, mts_k=k
    )
    net = load_model(model, dtype=torch.float32)
    run_md(net, frames, settings, None, progress=False)
    return run_md(net, frames, settings, None, progress=False).replica_steps_per_s


def markdown(results: dict) -> str:
    keys = list(results["plain_ms_per_step"])
    names = ["plain", "compiled"] + [f"mts k={k}" for k in results["ks"]] + (["MACE"] if "mace_ms_per_step" in results else [])
    table = {"plain": results["plain_ms_per_step"], "compiled": results["compiled_ms_per_step"], **results["mts_ms_per_step_by_k"]}
    if "mace_ms_per_step" in results:
        table["MACE"] = results["mace_ms_per_step"]
    rows = ["ms per ASE MD step (0.5 fs), medians of the rounds:", "", "| structure/dtype | " + " | ".join(names) + " |"]
    rows.append("|---" * (len(names) + 1) + "|")
    rows += [f"| {key} | " + " | ".join(f"{table[n][key]:.3f}" for n in names) + " |" for key in keys]
    k = results["mts_k"]
    rows += ["", f"Default k = {k}: multiple time stepping / compiled conservative step:"]
    rows += [f"- {key}: {results['mts_ms_per_step'][key] / results['compiled_ms_per_step'][key]:.2f}" for key in keys]
    if "mace_ms_per_step" in results:
        rows += [f"- {key}: MACE / mts {results['mace_ms_per_step'][key] / results['mts_ms_per_step'][key]:.1f}x" for key in keys]
    rows += ["", "NVE, float64, 0.5 fs, ethanol: |drift| of the conserved energy (meV/atom/ps), mean and largest over replicas:", ""]
    rows += ["| k | mean | largest | collapses |", "|---|---|---|---|"]
    rows += [f"| {k} | {d['mean_abs']:.4f} | {d['max_abs']:.4f} | {d['collapses']} |" for k, d in results["nve_drift_by_k"].items()]
    rows += [
        "",
        f"64 batched replicas, float32, compiled: mts {results['batched_64_mts_replica_steps_per_s']:.0f} replica-steps/s, "
        f"conservative {results['batched_64_conservative_replica_steps_per_s']:.0f}; mts / plain ASE loop "
        f"**{results['speedup_64_mts_vs_ase_loop']:.1f}x**.",
    ]
    return "\n".join(rows) + "\n"


def add_to_md_speed(results: dict) -> None:
    """The issue's keys in md_speed.json, beside the timings that file already holds."""
    path = RESULTS / "md_speed.json"
    payload = json.loads(path.read_text())
    payload.update(
        mts_command=command_line(),
        mts_model=results["model"],
        mts_k=results["mts_k"],
        mts_ms_per_step=results["mts_ms_per_step"],
        mts_same_run_compiled_ms_per_step=results["compiled_ms_per_step"],
        mts_nve_drift_meV_per_atom_ps=results["nve_drift_by_k"][str(results["mts_k"])]["mean_abs"],
        speedup_64_mts_vs_ase_loop=results["speedup_64_mts_vs_ase_loop"],
    )
    path.write_text(json.dumps(payload, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model.pt of a transformer trained with model.direct_forces: true")
    parser.add_argument("--mace-python", help="python of a venv with mace-torch (omit to skip MACE)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--k", type=int, default=4, help="the k reported as mts_ms_per_step (the default of MDSettings.mts_k)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drift-time-ps", type=float, default=50.0)
    parser.add_argument("--drift-replicas", type=int, default=4)
    parser.add_argument("--batched-steps", type=int, default=96)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds = timing_rounds(args)
    results = {
        "model": args.model,
        "ks": args.ks,
        "mts_k": args.k,
        "rounds": rounds,
        "plain_ms_per_step": medians(rounds, "plain"),
        "compiled_ms_per_step": medians(rounds, "compiled"),
        "mts_ms_per_step_by_k": {f"mts k={k}": medians(rounds, f"mts k={k}") for k in args.ks},
    }
    results["mts_ms_per_step"] = results["mts_ms_per_step_by_k"][f"mts k={args.k}"]
    if args.mace_python:
        results["mace_version"] = package_version(args.mace_python, "mace")
        results["mace_ms_per_step"] = medians(rounds, "MACE")
    results["batched_64_mts_replica_steps_per_s"] = batched_64(args.model, "mts", args.k, args.batched_steps)
    results["batched_64_conservative_replica_steps_per_s"] = batched_64(args.model, "conservative", 1, args.batched_steps)
    ase_loop = 1e3 / results["plain_ms_per_step"]["ethanol (9 atoms)/float32"]
    results["speedup_64_mts_vs_ase_loop"] = results["batched_64_mts_replica_steps_per_s"] / ase_loop
    results["nve_drift_by_k"] = {str(k): nve_drift(args.model, k, args) for k in args.ks}
    write_results("mts_speed", results, markdown(results))
    add_to_md_speed(results)
    print(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
