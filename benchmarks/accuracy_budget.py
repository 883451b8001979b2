"""Accuracy against training wall-clock on the project's own DFT test sets (``benchmarks/test_sets``).

Every training run lives in ``benchmarks/accuracy_budget/runs/<recipe>_<budget>min_seed<S>/`` with
its ``config.yaml``, ``log.csv`` and ``model.pt`` (the best epoch by *validation* loss; the test
sets never choose anything). This script evaluates each run's ``model.pt`` on the test sets of
its molecule (float64, 4 rotations for the rotational error) and writes one row per run and test set.

Test energies: the PySCF labels and the data's labels differ by one constant per molecule (another
code and grid). The constant is the mean offset measured on 20 *shared training* frames by
``test_sets.py check`` (``results/labeller_check.json``); ``test_energy_mae_meV`` is measured after
taking it off, ``test_energy_mae_raw_meV`` before.

A committee (``COMMITTEES``) is evaluated as the mean of its members' energies, at the sum of their
budgets: two 60-minute models next to one 120-minute model.

Training commands (repository root; one thread each, beside one other job: DFT labelling, another
training or the developer's tests, so epochs per minute vary by up to a fifth; each row gives its epochs)::

    OMP_NUM_THREADS=1 remul-ff train examples/rmd17_ethanol.yaml \\
        --set data.path=../shared/data/rmd17_ethanol/train.xyz \\
        --set data.e0s=../shared/data/rmd17_ethanol/isolated_atoms.xyz \\
        --set train.max_minutes=B --set train.num_threads=1 --set train.seed=S \\
        [--set loss.equi_fraction=0.25 | --set train.weight_decay=0.05 | --set train.ema_decay=0.999 | --set loss.mode=augment] \\
        [--set loss.reflections=true: recipe stage2-augment-o3, run beside stage2-augment-so3 (the default)] \\
        [--set loss.mode=remul: the recipe's loss until session 15; it trains with augment since] \\
        [--set model.angular_degree=3 | --set model.depth=4 | --set model.depth=4 --set model.width=192] \\
        --set output_dir=benchmarks/accuracy_budget/runs/<recipe>_<B>min_seed<S>
    # EGNN at other budgets (its 30-minute runs are the EARLIER_RUNS below):
    OMP_NUM_THREADS=1 remul-ff train benchmarks/stability/rmd17_ethanol/egnn/config.yaml --no-progress \\
        --set train.max_minutes=B --set train.seed=S --set output_dir=benchmarks/accuracy_budget/runs/egnn_<B>min_seed<S>
    # xTB pretraining, then DFT (recipe xtb-transfer; the 71 s of labels and the pretraining count in B):
    OMP_NUM_THREADS=1 python benchmarks/xtb_pretraining_frames.py ../shared/data/rmd17_ethanol/train.xyz \
        runs/xtb_pretraining/ethanol_rattled.xyz --copies 20
    OMP_NUM_THREADS=1 remul-ff train benchmarks/accuracy_budget/pretrain/xtb_pretrain.yaml --set train.num_threads=1 \
        --set output_dir=runs/xtb_pretrain_5min_seed0     # its config.yaml and log.csv: accuracy_budget/pretrain/
    OMP_NUM_THREADS=1 remul-ff train examples/rmd17_ethanol.yaml [data as above] --set train.max_minutes=5.9 \
        --set train.init_from=runs/xtb_pretrain_5min_seed0/model.pt --set train.init_energy_reference=data \
        --set train.num_threads=1 --set output_dir=benchmarks/accuracy_budget/runs/xtb-transfer_15min_seed0
    # ... beside it, from random weights: --set train.max_minutes=15 (run stage2-augment-rerun_15min_seed0)
    python benchmarks/accuracy_budget.py

Writes ``benchmarks/results/accuracy_budget.{json,md,png}``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import ase.io
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import yaml
from perf._common import RESULTS, write_results

from remul_ff.data.batch import Structure
from remul_ff.models import load_model
from remul_ff.models.committee import Committee
from remul_ff.training.evaluate import evaluate

HERE = Path(__file__).resolve().parent
RUNS = HERE / "accuracy_budget" / "runs"
TEST_SETS = HERE / "test_sets"
SETS_OF = {"rmd17_ethanol": ["ethanol_500K"], "acac": ["acac_300K", "acac_600K"]}
CHECK_ROW = {"rmd17_ethanol": "ethanol PBE/def2-SVP", "acac": "acac PBE+d3bj/def2-SVP"}
RUN_NAME = re.compile(r"(?P<recipe>.+)_(?P<budget>[\d.]+)min_seed(?P<seed>\d+)$")
STABILITY = HERE / "stability"
# Committed 30-minute runs of earlier sessions (one thread beside one other job, as the runs here):
# the default transformer recipe and EGNN of benchmarks/training_seeds.py, as (recipe, run folder).
EARLIER_RUNS = [
    ("default", STABILITY / "rmd17_ethanol_500K/remul_offeq_f02"),
    ("default", STABILITY / "training_seeds/remul_offeq_f02_seed1"),
    ("default", STABILITY / "training_seeds/remul_offeq_f02_seed2"),
    ("egnn", STABILITY / "rmd17_ethanol/egnn"),
    ("egnn", STABILITY / "training_seeds/egnn_seed1"),
    ("egnn", STABILITY / "training_seeds/egnn_seed2"),
]

# Committees of finished runs at the sum of their budgets: two 60-minute models against one of 120 minutes.
COMMITTEES = {"stage2 committee": ["stage2_60min_seed0", "stage2_60min_seed1"]}


def molecule_of(config: dict) -> str:
    return Path(config["data"]["path"]).parent.name


def load_test_set(name: str, offset_eV: float) -> list[Structure]:
    frames = ase.io.read(TEST_SETS / f"{name}.xyz", index=":")
    return [Structure(a.positions, a.numbers, a.get_potential_energy() - offset_eV, a.get_forces()) for a in frames]


def energy_offsets() -> dict[str, float]:
    """Mean PySCF-minus-data energy offset per molecule (eV), from the labeller check on shared frames."""
    rows = json.loads((RESULTS / "labeller_check.json").read_text())["rows"]
    return {molecule: rows[row]["energy_offset_mean_meV"] / 1e3 for molecule, row in CHECK_ROW.items() if row in rows}


def describe(run: Path, config: dict, recipe: str | None) -> tuple[str, float, int]:
    """``(recipe, budget in minutes, seed)`` from the folder name, or from the config for earlier runs."""
    if recipe is not None:
        return recipe, float(config["train"]["max_minutes"]), int(config["train"]["seed"])
    match = RUN_NAME.match(run.name)
    return match["recipe"], float(match["budget"]), int(match["seed"])


def evaluate_run(run: Path, offsets: dict[str, float], recipe: str | None = None) -> list[dict]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    recipe, budget, seed = describe(run, config, recipe)
    model = load_model(run / "model.pt", "cpu", torch.float64)
    about = {
        "model": config["model"]["kind"],
        "recipe": recipe,
        "budget_min": budget,
        "seed": seed,
        "epochs": len((run / "log.csv").read_text().splitlines()) - 1,
        "model_path": str((run / "model.pt").relative_to(HERE.parent)),
    }
    return test_rows(model, run, molecule_of(config), about, offsets)


def evaluate_committee(recipe: str, runs: list[Path], offsets: dict[str, float]) -> list[dict]:
    """A committee of finished runs (the mean of their energies), budgeted at the sum of their training times."""
    members = [evaluate_run_parts(run) for run in runs]
    model = Committee([m for m, _ in members])
    about = {
        "model": members[0][1]["model"]["kind"],
        "recipe": recipe,
        "budget_min": sum(float(c["train"]["max_minutes"]) for _, c in members),
        "seed": "+".join(str(c["train"]["seed"]) for _, c in members),
        "epochs": "+".join(str(len((run / "log.csv").read_text().splitlines()) - 1) for run in runs),
        "model_path": ",".join(str((run / "model.pt").relative_to(HERE.parent)) for run in runs),
    }
    return test_rows(model, runs[0], molecule_of(members[0][1]), about, offsets)


def evaluate_run_parts(run: Path) -> tuple[torch.nn.Module, dict]:
    return load_model(run / "model.pt", "cpu", torch.float64), yaml.safe_load((run / "config.yaml").read_text())


def test_rows(model: torch.nn.Module, run: Path, molecule: str, about: dict, offsets: dict[str, float]) -> list[dict]:
    """One row per test set of ``molecule``: ``about`` plus the test errors of ``model``."""
    e0s = torch.load(run / "model.pt", weights_only=True)["e0s"]
    rows = []
    for name in SETS_OF.get(molecule, []):
        if not (TEST_SETS / f"{name}.xyz").exists():
            continue
        offset = offsets.get(molecule, 0.0)
        structures = load_test_set(name, offset)
        report = evaluate(model, structures, e0s, n_rotations=4)
        raw = evaluate(model, load_test_set(name, 0.0), e0s, n_rotations=0)["energy_mae_meV"]
        rows.append(
            {
                **about,
                "molecule": molecule,
                "test_set": name,
                "test_force_mae_meV_A": report["forces_mae_meV_A"],
                "test_force_rmse_meV_A": report["forces_rmse_meV_A"],
                "test_energy_mae_meV": report["energy_mae_meV"],
                "test_energy_mae_raw_meV": raw,
                "energy_offset_meV": 1e3 * offset,
                "rotational_force_error": report.get("equi_forces_rel", math.nan),
                "n_test_frames": len(structures),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model | recipe | test set | budget (min) | seed | epochs | force MAE (meV/Å) | force RMSE | energy MAE (meV) "
        "| rot. force error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["test_set"], r["model"], r["recipe"], r["budget_min"], str(r["seed"]))):
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['test_set']} | {r['budget_min']:g} | {r['seed']} | {r['epochs']} | "
            f"{r['test_force_mae_meV_A']:.2f} | {r['test_force_rmse_meV_A']:.2f} | {r['test_energy_mae_meV']:.2f} | "
            f"{100 * r['rotational_force_error']:.2f}% |"
        )
    return "\n".join(lines)


def summary(rows: list[dict], test_set: str) -> str:
    """Per (model, recipe, budget): the force and energy MAE of each seed and their mean."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["test_set"] == test_set:
            groups.setdefault((r["model"], r["recipe"], r["budget_min"]), []).append(r)
    lines = ["| model | recipe | budget (min) | force MAE per seed | mean force MAE | mean energy MAE |", "|---|---|---|---|---|---|"]
    for (model, recipe, budget), group in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        group.sort(key=lambda r: str(r["seed"]))
        forces = [r["test_force_mae_meV_A"] for r in group]
        energy = sum(r["test_energy_mae_meV"] for r in group) / len(group)
        lines.append(
            f"| {model} | {recipe} | {budget:g} | {', '.join(f'{f:.2f}' for f in forces)} | "
            f"{sum(forces) / len(forces):.2f} | {energy:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe in sorted({(r["model"], r["recipe"], r["test_set"]) for r in rows}):
        mine = sorted((r for r in rows if (r["model"], r["recipe"], r["test_set"]) == recipe), key=lambda r: r["budget_min"])
        ax.plot([r["budget_min"] for r in mine], [r["test_force_mae_meV_A"] for r in mine], "o", label=" / ".join(recipe))
    ax.set_xscale("log")
    ax.set_xlabel("training wall-clock (min, one thread)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy_budget.png", dpi=120)


def main() -> None:
    offsets = energy_offsets()
    runs = [(None, run) for run in sorted(RUNS.glob("*")) if (run / "model.pt").exists()] + EARLIER_RUNS
    rows = [row for recipe, run in runs for row in evaluate_run(run, offsets, recipe)]
    for recipe, names in COMMITTEES.items():
        if all((RUNS / name / "model.pt").exists() for name in names):
            rows += evaluate_committee(recipe, [RUNS / name for name in names], offsets)
    note = (
        "Test sets: benchmarks/test_sets (GFN2-xTB MD geometries, PySCF labels at the data's level of theory). "
        "Models: each run's model.pt (best epoch by validation loss). Energies after the labeller's constant "
        "offset measured on shared training frames."
    )
    markdown = note + "\n\n" + summary(rows, "ethanol_500K") + "\n\nEvery run:\n\n" + table(rows) + "\n"
    write_results("accuracy_budget", {"rows": rows}, markdown)
    plot(rows)


if __name__ == "__main__":
    main()
