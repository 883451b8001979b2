"""Validation accuracy over training seeds: the default transformer recipe against EGNN, rMD17 ethanol.

Every accuracy number in the stability reports is one training run. Here the two recipes of
``stability/spec_rmd17_ethanol_500K.yaml`` compared there, ``remul_offeq_f02`` (the default) and
``egnn``, are trained twice more with ``train.seed`` 1 and 2 (the transformer also with
``data.off_equilibrium.seed``, so other frames are perturbed), from the seed-0 runs' own
``config.yaml``: same data, split, loss and 30 minutes on one thread while one other job used the
second core, as seed 0 had. Every model is evaluated on the same 50 validation frames (float64,
32 rotations, rotation seed 0 as in report.json). Reported per seed and, per recipe, as the mean
with its 95% Student-t interval over seeds; the transformer minus EGNN difference gets Welch's
interval.

Commands (repository root; S = 1, 2; one training at a time beside one MD job)::

    OMP_NUM_THREADS=1 remul-ff train benchmarks/stability/rmd17_ethanol_500K/remul_offeq_f02/config.yaml \\
        --set train.seed=S --set data.off_equilibrium.seed=S \\
        --set output_dir=benchmarks/stability/training_seeds/remul_offeq_f02_seedS
    OMP_NUM_THREADS=1 remul-ff train benchmarks/stability/rmd17_ethanol/egnn/config.yaml \\
        --set train.seed=S --set output_dir=benchmarks/stability/training_seeds/egnn_seedS
    python benchmarks/training_seeds.py

Writes ``benchmarks/results/training_seeds.{json,md,png}``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from perf._common import RESULTS, write_results

from remul_ff.config import load_config
from remul_ff.data.splits import load_splits
from remul_ff.models import load_model
from remul_ff.training.data import prepare_data
from remul_ff.training.evaluate import evaluate

STABILITY = Path(__file__).resolve().parent / "stability"
RUNS = {
    "transformer (remul_offeq_f02, default)": ["rmd17_ethanol_500K/remul_offeq_f02"]
    + [f"training_seeds/remul_offeq_f02_seed{s}" for s in (1, 2)],
    "EGNN": ["rmd17_ethanol/egnn"] + [f"training_seeds/egnn_seed{s}" for s in (1, 2)],
}
METRICS = ("forces_mae_meV_A", "energy_mae_meV", "equi_forces_rel")


def _student_t_cdf(x: float, dof: float) -> float:
    """Student's t CDF at ``x >= 0``: one half plus the density's integral from 0 (Simpson's rule)."""
    t = np.linspace(0.0, x, 20001)
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    density = np.exp(log_norm - (dof + 1) / 2 * np.log1p(t * t / dof))
    return 0.5 + (t[1] - t[0]) / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())


def student_t_quantile(p: float, dof: float) -> float:
    """The ``p`` (> 0.5) quantile of Student's t with ``dof`` degrees of freedom, by bisection."""
    low, high = 0.0, 1000.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if _student_t_cdf(middle, dof) < p else (low, middle)
    return 0.5 * (low + high)


def mean_interval(values: list[float]) -> dict:
    """Mean of ``values`` with its 95% Student-t interval (sample standard deviation, n - 1 dof)."""
    n, mean, std = len(values), float(np.mean(values)), float(np.std(values, ddof=1))
    half = student_t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "std": std, "n": n}


def welch_interval(a: list[float], b: list[float]) -> dict:
    """Mean of ``a`` minus mean of ``b`` with Welch's 95% interval (unequal variances)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    difference, half = float(np.mean(a) - np.mean(b)), student_t_quantile(0.975, dof) * math.sqrt(va + vb)
    return {"difference": difference, "ci95": [difference - half, difference + half], "dof": float(dof)}


def validation_report(run: Path) -> dict:
    """Accuracy and rotational error of ``run``'s model.pt on its config's validation frames."""
    config = load_config(run / "config.yaml")
    data_config = dataclasses.replace(config.data, off_equilibrium=None)  # only the validation frames are needed
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(data_config, Path(tmp) / "splits.json", progress=False)
        valid = load_splits(Path(tmp) / "splits.json")["valid"]
    if (run / "splits.json").exists() and load_splits(run / "splits.json")["valid"] != valid:
        sys.exit(f"{run}/splits.json holds another validation split than its config draws; the seeds would not compare.")
    model = load_model(run / "model.pt", "cpu", torch.float64)
    report = evaluate(model, data.valid, data.e0s, 32, 32, "cpu", torch.float64, seed=0)
    return {
        "run": str(run.relative_to(STABILITY.parent)),
        "train_seed": config.train.seed,
        **_epochs(run),
        **{key: report[key] for key in METRICS},
    }


def _epochs(run: Path) -> dict:
    """Epochs in the budget and the median seconds per epoch (slower when the other core was busier)."""
    with open(run / "log.csv") as log:
        seconds = [float(row["epoch_time_s"]) for row in csv.DictReader(log)]
    return {"epochs": len(seconds), "median_epoch_s": float(np.median(seconds))}


def markdown(results: dict) -> str:
    rows = [
        "Validation frames: 50 rMD17 ethanol frames (split seed 0), float64, 32 rotations. Mean over training "
        "seeds with its 95% Student-t interval.",
        "",
        "| recipe | train seed | epochs in 30 min (median s/epoch) | force MAE (meV/Å) | energy MAE (meV) | rotational force error |",
        "|---|---|---|---|---|---|",
    ]
    for recipe, entry in results["recipes"].items():
        for seed in entry["seeds"]:
            rows.append(
                f"| {recipe} | {seed['train_seed']} | {seed['epochs']} ({seed['median_epoch_s']:.1f}) | {seed['forces_mae_meV_A']:.2f} | "
                f"{seed['energy_mae_meV']:.2f} | {100 * seed['equi_forces_rel']:.3f}% |"
            )
        f, e = entry["forces_mae_meV_A"], entry["energy_mae_meV"]
        rows.append(
            f"| **{recipe}, mean** | | | **{f['mean']:.2f}** [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}] | "
            f"{e['mean']:.2f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}] | |"
        )
    d = results["transformer_minus_egnn_forces_mae_meV_A"]
    rows += [
        "",
        f"Transformer minus EGNN, force MAE: {d['difference']:+.2f} meV/Å, Welch 95% interval "
        f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] ({d['dof']:.1f} degrees of freedom).",
    ]
    return "\n".join(rows) + "\n"


def plot(results: dict) -> None:
    """Force MAE per seed (dots) and the mean with its 95% interval (bar) per recipe."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for k, entry in enumerate(results["recipes"].values()):
        values, summary = [s["forces_mae_meV_A"] for s in entry["seeds"]], entry["forces_mae_meV_A"]
        ax.plot([k] * len(values), values, "o", color=f"C{k}", alpha=0.6)
        low, high = summary["ci95"]
        ax.errorbar(
            [k + 0.15], [summary["mean"]], yerr=[[summary["mean"] - low], [high - summary["mean"]]], fmt="s", color=f"C{k}", capsize=4
        )
    ax.set_xticks(range(len(results["recipes"])), list(results["recipes"]), fontsize=8)
    ax.set_ylabel("validation force MAE (meV/Å)")
    ax.set_title("rMD17 ethanol, 30 CPU-min per training: seeds and 95% interval", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "training_seeds.png", dpi=120)


def main() -> None:
    torch.set_num_threads(1)
    recipes = {}
    for recipe, runs in RUNS.items():
        seeds = [validation_report(STABILITY / run) for run in runs]
        recipes[recipe] = {"seeds": seeds, **{key: mean_interval([s[key] for s in seeds]) for key in METRICS}}
    forces = [[s["forces_mae_meV_A"] for s in entry["seeds"]] for entry in recipes.values()]
    results = {"recipes": recipes, "transformer_minus_egnn_forces_mae_meV_A": welch_interval(*forces)}
    write_results("training_seeds", results, markdown(results))
    plot(results)
    print(markdown(results))


if __name__ == "__main__":
    main()
