"""MD speed on this CPU, all in one run: remul-ff's ASE calculator, batched MD, and MACE side by side.

Measured:

* ms per MD step through the ASE calculator (VelocityVerlet) on ethanol (9 atoms) and 3BPA
  (27 atoms), float32 and float64, for remul-ff and for MACE (128x0e+128x1o, r_max 5 Å), and for
  remul-ff's AOTInductor-compiled calculator (``REMULCalculator(..., compile=True)``, float32); every
  calculator is timed ``--rounds`` times in turn (default 3) and the medians are reported;
* batched MD throughput in replica-steps/s for 1, 8, 64, 256, 1024 and 4096 ethanol replicas (eager), and
  for 64 with ``torch.compile`` (the stability protocol's setting);
* the speed-up of 64 batched replicas (eager and compiled) over the single-replica ASE loop (plain calculator);
* with ``--egnn-model``, the project's EGNN baseline through the same calculator and engine;
* with ``--pet-python``, PET (metatrain's default size, untrained) through metatomic's ASE calculator
  (pet_speed_helper.py); it has no MAE here, so it is not on the Pareto plot;
* with ``--mae-report``, force MAE against ms per ASE step (the accuracy/speed Pareto front): remul-ff's and
  EGNN's validation force MAE from a stability ``report.json`` or, over training seeds, from
  ``results/training_seeds.json`` (same data, same training budget), MACE's
  from ``MACE_FORCE_MAE`` below (MACE is not trained here, so its MAE is quoted, not measured).

Run from the repository root (the MACE part needs a venv with mace-torch, see mace_speed_helper.py)::

    python benchmarks/perf/md_speed.py --model benchmarks/stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt \
        --egnn-model benchmarks/stability/rmd17_ethanol/egnn/model.pt \
        --mae-report benchmarks/stability/rmd17_ethanol_500K/report.json --mace-python ../mace-venv/bin/python \
        --pet-python ../pet-venv/bin/python

(``--replicas`` sets the batched sizes; the compiled calculator needs g++ and compiles once per model, ~1 min.)
``--mae-report benchmarks/results/training_seeds.json`` plots each recipe's mean MAE over training seeds with its
95% interval instead of one run's, and ``--pareto-only`` redoes just the Pareto plot and table on the committed
timings (the MAEs change with more seeds; the timings do not).

Writes ``benchmarks/results/md_speed.{json,md,png}`` (and ``md_speed_pareto.png`` with ``--mae-report``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _common import RESULTS, command_line, write_results
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet

from remul_ff.integrations import REMULCalculator
from remul_ff.md import MDSettings, run_md
from remul_ff.models import build_model, hyperparameters
from remul_ff.models.files import MODEL_FILE_KIND, load_file

BENCHMARKS = Path(__file__).resolve().parents[1]
DATA = BENCHMARKS.parent.parent / "shared" / "data"
# MACE is not trained here: its rMD17 ethanol force MAE is quoted. "published": full training on 950 frames
# (Batatia et al. 2022, ../shared/data/README.md); "60 CPU-min": the project's anchor, MACE trained for
# 60 minutes on this 2-core machine (benchmarks/README.md), twice remul-ff's and EGNN's 30 minutes.
MACE_FORCE_MAE = {"published, full training": 2.1, "60 CPU-min here": 11.8}
STRUCTURES = {"ethanol (9 atoms)": DATA / "rmd17_ethanol" / "train.xyz", "3BPA (27 atoms)": DATA / "3bpa" / "train_300K.xyz"}


def calculator_for(model_path: str, numbers, dtype: str, compile: bool = False) -> REMULCalculator:
    """The trained model, or, for elements it was not trained on (N in 3BPA), an untrained model
    with the same hyperparameters: weights do not change the speed."""
    calculator = REMULCalculator(model_path, default_dtype=dtype, compile=compile)
    if set(numbers) <= set(calculator.model.elements.elements.tolist()):
        return calculator
    payload = load_file(model_path, MODEL_FILE_KIND)
    torch.manual_seed(0)  # the same weights every time: a compiled package is then built once and cached
    model = build_model(payload["model_kind"], payload["hyperparameters"], sorted(set(numbers)), {})
    return REMULCalculator(model=model, default_dtype=dtype, compile=compile)


def minor_faults() -> int:
    """Minor page faults of this process so far: pages the kernel had to map in (freed memory reused)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def ase_step_cost(model_path: str, path: Path, dtype: str, steps: int, compile: bool = False, warmup: int = 5) -> dict[str, float]:
    """ms and minor page faults per ASE VelocityVerlet step (0.5 fs) from the first frame of ``path``."""
    atoms = read(path, index=0)
    atoms.pbc = False
    atoms.calc = calculator_for(model_path, atoms.numbers.tolist(), dtype, compile)
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(warmup)
    faults, start = minor_faults(), time.perf_counter()
    dyn.run(steps)
    return {"ms_per_step": 1e3 * (time.perf_counter() - start) / steps, "faults_per_step": (minor_faults() - faults) / steps}


def calculator_ms_per_step(model_path: str, path: Path, dtype: str, steps: int, compile: bool = False) -> float:
    return ase_step_cost(model_path, path, dtype, steps, compile)["ms_per_step"]


def batched_cost(model_path: str, replicas: int, steps: int, dtype: str, compile: bool = False) -> dict[str, float]:
    """Replica-steps/s and minor page faults per step of ``replicas`` batched ethanol replicas (NVE),
    from the second of two identical runs (the first warms up and compiles)."""
    calculator = REMULCalculator(model_path, default_dtype=dtype)
    starts = read(STRUCTURES["ethanol (9 atoms)"], index=f":{replicas}")
    starts = [starts[k % len(starts)] for k in range(replicas)]
    settings = MDSettings(temperature=300, timestep_fs=0.5, total_time_fs=0.5 * steps, thermostat="nve", write_interval=0, compile=compile)
    run_md(calculator.model, starts, settings, None, progress=False)
    faults = minor_faults()
    result = run_md(calculator.model, starts, settings, None, progress=False)
    return {"replica_steps_per_s": result.replica_steps_per_s, "faults_per_step": (minor_faults() - faults) / steps}


def batched_throughput(model_path: str, replicas: int, steps: int, dtype: str, compile: bool = False) -> float:
    return batched_cost(model_path, replicas, steps, dtype, compile)["replica_steps_per_s"]


def package_version(python: str, package: str) -> str:
    out = subprocess.run([python, "-c", f"import {package}; print({package}.__version__)"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def peer_ms_per_step(helper_name: str, python: str, steps: int) -> dict[str, float]:
    """ms per ASE step of a peer model, timed by ``helper_name`` in the venv of ``python``."""
    structures = json.dumps({name: str(path) for name, path in STRUCTURES.items()})
    helper = Path(__file__).with_name(helper_name)
    out = subprocess.run([python, str(helper), structures, str(steps)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["ms_per_step"]


def markdown(results: dict) -> str:
    mace = results.get("mace", {}).get("ms_per_step", {})
    compiled = results.get("calculator_compiled_ms_per_step", {})
    threads = results.get("machine", {}).get("torch_threads", torch.get_num_threads())  # the timing run's
    rows = [
        f"remul-ff model: {results['model_hyperparameters']}; torch threads: {threads}\n",
        "| structure | dtype | remul-ff (ms/step) | remul-ff compiled (ms/step) | MACE (ms/step) | MACE / remul-ff | MACE / compiled |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, ms in results["calculator_ms_per_step"].items():
        other, fast = mace.get(key), compiled.get(key)
        cells = [_ms(ms), _ms(fast), _ms(other), _ratio(other, ms), _ratio(other, fast)]
        rows.append(f"| {key.split('/')[0]} | {key.split('/')[1]} | " + " | ".join(cells) + " |")
    rows += _round_rows(results)
    rows += ["", f"Batched NVE MD, ethanol, {results['batched_dtype']}:", "", "| replicas | replica-steps/s |", "|---|---|"]
    rows += [f"| {r} | {v:.0f} |" for r, v in results["batched_replica_steps_per_s"].items()]
    rows += [
        "",
        f"64 batched replicas vs the single-replica ASE loop ({results['batched_dtype']}): "
        f"**{results['speedup_64_vs_ase_loop']:.1f}x** more replica-steps/s; with `compile` "
        f"({results['batched_compiled_replica_steps_per_s']['64']:.0f} replica-steps/s) "
        f"**{results['speedup_64_compiled_vs_ase_loop']:.1f}x**.",
    ]
    return "\n".join(rows + _egnn_rows(results) + _pet_rows(results) + _pareto_rows(results)) + "\n"


def _round_rows(results: dict) -> list[str]:
    """MACE / compiled remul-ff in each round, float32: how much the ratio moves on this machine."""
    rounds = results.get("calculator_rounds", [])
    if not rounds or "MACE" not in rounds[0]:
        return []
    rows = ["", f"Medians of {len(rounds)} rounds (every calculator timed once per round, in turn); MACE / compiled per round:"]
    for key in rounds[0]["remul-ff compiled"]:
        ratios = ", ".join(f"{one['MACE'][key] / one['remul-ff compiled'][key]:.1f}x" for one in rounds)
        rows.append(f"{key.split('/')[0]}: {ratios}.")
    return rows


def _egnn_rows(results: dict) -> list[str]:
    if "egnn" not in results:
        return []
    egnn = results["egnn"]
    rows = [
        "",
        f"EGNN baseline ({egnn['model_hyperparameters']}), same calculator and engine:",
        "",
        "| structure | dtype | EGNN (ms/step) | EGNN / remul-ff | EGNN / remul-ff compiled |",
        "|---|---|---|---|---|",
    ]
    for key, ms in egnn["calculator_ms_per_step"].items():
        compiled = results["calculator_compiled_ms_per_step"].get(key)
        rows.append(
            f"| {key.split('/')[0]} | {key.split('/')[1]} | {_ms(ms)} | {_ratio(ms, results['calculator_ms_per_step'][key])} "
            f"| {_ratio(ms, compiled)} |"
        )
    batched = egnn["batched_replica_steps_per_s"]["64"]
    return rows + [
        "",
        f"EGNN batched, 64 replicas: {batched:.0f} replica-steps/s "
        f"(remul-ff: {results['batched_replica_steps_per_s'].get('64', float('nan')):.0f}).",
    ]


def _pet_rows(results: dict) -> list[str]:
    if "pet" not in results:
        return []
    rows = [
        "",
        f"PET (metatrain {results['pet']['metatrain_version']}, untrained, default hyperparameters), through metatomic's ASE calculator:",
        "",
        "| structure | dtype | PET (ms/step) | PET / remul-ff | PET / remul-ff compiled |",
        "|---|---|---|---|---|",
    ]
    for key, ms in results["pet"]["ms_per_step"].items():
        compiled = results["calculator_compiled_ms_per_step"].get(key)
        rows.append(
            f"| {key.split('/')[0]} | {key.split('/')[1]} | {_ms(ms)} | {_ratio(ms, results['calculator_ms_per_step'][key])} "
            f"| {_ratio(ms, compiled)} |"
        )
    return rows


def _pareto_rows(results: dict) -> list[str]:
    if "pareto_ethanol_float32" not in results:
        return []
    redone = f" (redone on these timings by `{results['pareto_command']}`)" if "pareto_command" in results else ""
    rows = [
        "",
        f"Accuracy vs speed, ethanol, float32 ASE step (`md_speed_pareto.png`){redone}:",
        "",
        "| model | ms/step | force MAE (meV/Å) | MAE from |",
        "|---|---|---|---|",
    ]
    return rows + [f"| {p['model']} | {_ms(p['ms_per_step'])} | {_mae(p)} | {p['mae_source']} |" for p in results["pareto_ethanol_float32"]]


def _mae(point: dict) -> str:
    interval = point.get("force_mae_ci95")
    return f"{point['force_mae_meV_A']:.1f}" + (f" [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else "")


def plot_pareto(points: list[dict]) -> None:
    """Force MAE against ms per step: the lower left corner is better on both counts."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, point in enumerate(points):
        measured = not point["model"].startswith("MACE")
        interval = point.get("force_mae_ci95")
        error = None if not interval else [[point["force_mae_meV_A"] - interval[0]], [interval[1] - point["force_mae_meV_A"]]]
        ax.errorbar(
            point["ms_per_step"],
            point["force_mae_meV_A"],
            yerr=error,
            fmt="o" if measured else "s",
            mfc=None if measured else "none",
            capsize=3,
        )
        # a label goes left of its point when another point sits close on its right, so that labels do not cross
        crowded = any(1 < other["ms_per_step"] / point["ms_per_step"] < 2 for other in points)
        ax.annotate(
            point["model"],
            (point["ms_per_step"], point["force_mae_meV_A"]),
            fontsize=7,
            xytext=(-6 if crowded else 6, 4 if k % 2 else -10),
            textcoords="offset points",
            ha="right" if crowded else "left",
        )
    ax.set_xscale("log")
    times = [point["ms_per_step"] for point in points]
    ax.set_xlim(min(times) / 1.5, max(times) * 8)  # room for the labels on the right
    ax.set_xlabel("ms per ASE MD step (ethanol, float32, this CPU)")
    ax.set_ylabel("validation force MAE (meV/Å)")
    ax.set_title("Accuracy vs speed (open squares: MAE quoted; bars: 95% over training seeds)", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "md_speed_pareto.png", dpi=120)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ratio(slow: float | None, fast: float | None) -> str:
    return f"{slow / fast:.1f}x" if slow and fast else "n/a"


def plot(results: dict) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    replicas = [int(r) for r in results["batched_replica_steps_per_s"]]
    ax.plot(replicas, list(results["batched_replica_steps_per_s"].values()), "o-", label="remul-ff batched MD")
    compiled = results.get("batched_compiled_replica_steps_per_s", {})
    ax.plot([int(r) for r in compiled], list(compiled.values()), "s", label="remul-ff batched MD, compiled")
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


def calculator_timings(model_path: str, steps: int, compile: bool) -> dict[str, float]:
    """ms per ASE step for every structure and dtype (float32 only when compiled)."""
    dtypes = ("float32",) if compile else ("float32", "float64")
    return {
        f"{name}/{dtype}": calculator_ms_per_step(model_path, path, dtype, steps, compile)
        for name, path in STRUCTURES.items()
        for dtype in dtypes
    }


def calculator_rounds(args: argparse.Namespace) -> list[dict]:
    """ms per ASE step of every calculator, ``args.rounds`` times in turn.

    This shared machine has slow spells (one calculator's timing moved 1.9x between runs); timing
    all calculators once per round and taking medians over rounds spreads a spell over all of them.
    """
    rounds = []
    for _ in range(args.rounds):
        one = {
            "remul-ff": calculator_timings(args.model, args.steps, compile=False),
            "remul-ff compiled": calculator_timings(args.model, args.steps, compile=True),
        }
        if args.egnn_model:
            one["EGNN"] = calculator_timings(args.egnn_model, args.steps, compile=False)
        if args.mace_python:
            one["MACE"] = peer_ms_per_step("mace_speed_helper.py", args.mace_python, max(args.steps // 4, 20))
        if args.pet_python:
            one["PET"] = peer_ms_per_step("pet_speed_helper.py", args.pet_python, max(args.steps // 10, 10))
        rounds.append(one)
    return rounds


def median_timings(rounds: list[dict], name: str) -> dict[str, float]:
    """Per structure and dtype, the median over rounds of ``name``'s ms per step."""
    return {key: float(np.median([one[name][key] for one in rounds])) for key in rounds[0][name]}


def egnn_results(path: str, rounds: list[dict], args: argparse.Namespace) -> dict:
    """The EGNN baseline timed the same way as remul-ff (plain calculator, and batched at 64 replicas)."""
    return {
        "model": path,
        "model_hyperparameters": hyperparameters(REMULCalculator(path).model),
        "calculator_ms_per_step": median_timings(rounds, "EGNN"),
        "batched_replica_steps_per_s": {"64": batched_throughput(path, 64, args.batched_steps, args.batched_dtype)},
    }


def validation_force_mae(source: str, model_path: str) -> dict:
    """The validation force MAE (meV/Å) of ``model_path``: ``{"mean": ..., "ci95": [low, high] or None}``.

    ``source`` is a stability ``report.json`` (one training run: no interval) or ``results/training_seeds.json``
    (the mean over training seeds of the recipe whose seed-0 run is ``model_path``, with its 95% interval).
    """
    payload = json.loads(Path(source).read_text())
    wanted = Path(model_path).resolve()
    if "recipes" in payload:
        for recipe in payload["recipes"].values():
            if (BENCHMARKS / recipe["seeds"][0]["run"] / "model.pt").resolve() == wanted:
                return {"mean": recipe["forces_mae_meV_A"]["mean"], "ci95": recipe["forces_mae_meV_A"]["ci95"]}
    for entry in payload.get("models", {}).values():
        if entry.get("model_path") and Path(entry["model_path"]).resolve() == wanted:
            return {"mean": entry["forces_mae_meV_A"], "ci95": None}
    raise SystemExit(f"{source} has no model {model_path}; give the report (or training_seeds.json) that evaluated it.")


def pareto_points(results: dict, maes: dict[str, dict], mae_source: str) -> list[dict]:
    """(ms per ASE step, force MAE) for each model on ethanol in float32, with where the MAE comes from."""
    key = "ethanol (9 atoms)/float32"
    measured = [
        ("remul-ff", results["calculator_ms_per_step"][key], maes["remul-ff"]),
        ("remul-ff compiled", results["calculator_compiled_ms_per_step"][key], maes["remul-ff"]),
    ]
    if "egnn" in results:
        measured.append(("EGNN", results["egnn"]["calculator_ms_per_step"][key], maes["EGNN"]))
    points = [
        {"model": name, "ms_per_step": ms, "force_mae_meV_A": mae["mean"], "force_mae_ci95": mae["ci95"], "mae_source": mae_source}
        for name, ms, mae in measured
    ]
    mace_ms = results.get("mace", {}).get("ms_per_step", {}).get(key)
    if mace_ms:
        points += [
            {"model": f"MACE ({label})", "ms_per_step": mace_ms, "force_mae_meV_A": mae, "force_mae_ci95": None, "mae_source": "quoted"}
            for label, mae in MACE_FORCE_MAE.items()
        ]
    return points


def redo_pareto(args: argparse.Namespace, maes: dict[str, dict]) -> None:
    """Only the Pareto part, on the committed timings of ``results/md_speed.json`` (nothing is timed).

    For when the MAEs change (more training seeds) and the timings do not: the timing run's command and
    machine stay in the file, and this command is added as ``pareto_command``.
    """
    results = json.loads((RESULTS / "md_speed.json").read_text())
    if Path(results["model"]).resolve() != Path(args.model).resolve():
        raise SystemExit(f"md_speed.json timed {results['model']}, not {args.model}; run the full benchmark instead.")
    results["pareto_command"] = command_line()
    results["pareto_ethanol_float32"] = pareto_points(results, maes, args.mae_report)
    plot_pareto(results["pareto_ethanol_float32"])
    table = markdown(results)
    timing_command, timing_machine = results.pop("command"), results.pop("machine")
    write_results("md_speed", results, table, command=timing_command, machine_info=timing_machine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="remul-ff model.pt (the accuracy benchmark's best model)")
    parser.add_argument("--egnn-model", help="the EGNN baseline's model.pt, trained on the same data (omit to skip EGNN)")
    parser.add_argument(
        "--mae-report",
        help="a stability report.json that evaluated --model (and --egnn-model), or "
        "results/training_seeds.json (mean and 95%% interval over training seeds): their validation "
        "force MAE for the Pareto plot (omit to skip the plot)",
    )
    parser.add_argument(
        "--pareto-only",
        action="store_true",
        help="redo only the Pareto plot and table from the committed results/md_speed.json timings (needs --mae-report; times nothing)",
    )
    parser.add_argument("--mace-python", help="python of a venv with mace-torch (omit to skip MACE)")
    parser.add_argument("--pet-python", help="python of a venv with metatrain, for PET (omit to skip PET)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="times every calculator is timed, in turn (medians are reported)")
    parser.add_argument("--batched-steps", type=int, default=100)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64, 256, 1024, 4096])
    parser.add_argument("--batched-dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    # looked up before any timing, so that a report without these models fails at once
    maes = (
        {}
        if not args.mae_report
        else {
            name: validation_force_mae(args.mae_report, path)
            for name, path in (("remul-ff", args.model), ("EGNN", args.egnn_model))
            if path
        }
    )
    if args.pareto_only and not args.mae_report:
        parser.error("--pareto-only needs --mae-report")
    if args.pareto_only:
        return redo_pareto(args, maes)
    rounds = calculator_rounds(args)
    results = {
        "model": args.model,
        "model_hyperparameters": hyperparameters(REMULCalculator(args.model).model),
        "batched_dtype": args.batched_dtype,
        "calculator_rounds": rounds,
        "calculator_ms_per_step": median_timings(rounds, "remul-ff"),
        "calculator_compiled_ms_per_step": median_timings(rounds, "remul-ff compiled"),
    }
    results["batched_replica_steps_per_s"] = {
        str(r): batched_throughput(args.model, r, args.batched_steps, args.batched_dtype) for r in args.replicas
    }
    ase_loop = 1e3 / results["calculator_ms_per_step"][f"ethanol (9 atoms)/{args.batched_dtype}"]
    results["speedup_64_vs_ase_loop"] = results["batched_replica_steps_per_s"]["64"] / ase_loop
    # the stability protocol's setting (torch.compile), against the same plain ASE loop
    results["batched_compiled_replica_steps_per_s"] = {
        "64": batched_throughput(args.model, 64, args.batched_steps, args.batched_dtype, compile=True)
    }
    results["speedup_64_compiled_vs_ase_loop"] = results["batched_compiled_replica_steps_per_s"]["64"] / ase_loop
    if args.egnn_model:
        results["egnn"] = egnn_results(args.egnn_model, rounds, args)
    if args.mace_python:
        results["mace"] = {"mace_version": package_version(args.mace_python, "mace"), "ms_per_step": median_timings(rounds, "MACE")}
    if args.pet_python:
        results["pet"] = {"metatrain_version": package_version(args.pet_python, "metatrain"), "ms_per_step": median_timings(rounds, "PET")}
    if args.mae_report:
        results["pareto_ethanol_float32"] = pareto_points(results, maes, args.mae_report)
        plot_pareto(results["pareto_ethanol_float32"])
    write_results("md_speed", results, markdown(results))
    plot(results)
    print(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
