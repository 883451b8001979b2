"""Direct forces on the project's ethanol test set: their MAE and rotational error for REMUL, augmentation and none.

Every run in ``benchmarks/direct_forces/runs/<recipe>_<budget>min_seed<S>/`` is the default recipe
(``examples/rmd17_ethanol.yaml``) with ``model.direct_forces: true`` and a loss mode (the recipe's
name; ``remul-dw30``: REMUL with ``loss.direct_forces_weight=30``), for the same
wall-clock budget on one thread (beside one other job). This script evaluates each ``model.pt`` on
``test_sets/ethanol_500K.xyz`` (200 PBE/def2-SVP frames not in ``../shared``; float64; 8 random
rotations per frame for the rotational errors) and writes one row per run.

Training commands (repository root)::

    OMP_NUM_THREADS=1 remul-ff train examples/rmd17_ethanol.yaml --no-progress \\
        --set data.path=../shared/data/rmd17_ethanol/train.xyz \\
        --set data.e0s=../shared/data/rmd17_ethanol/isolated_atoms.xyz \\
        --set train.max_minutes=30 --set train.num_threads=1 --set train.seed=S --set data.off_equilibrium.seed=S \\
        --set model.direct_forces=true --set loss.mode=MODE \\
        --set output_dir=benchmarks/direct_forces/runs/MODE_30min_seedS
    # A head fitted to its own model's conservative forces (train.trainable: direct_forces_head; the energy
    # stays the 30-minute model's): 6400 frames of that model's own MD at 300 and 500 K, labelled by it
    # (benchmarks/self_distillation_frames.py, 20 CPU-min), then 15 minutes; recipe augment-headfit<L> for
    # model.direct_forces_layers=L (no digit: 1), budget 45 = 30 + 15 (the frames' MD not counted):
    OMP_NUM_THREADS=1 python benchmarks/self_distillation_frames.py \
        benchmarks/direct_forces/runs/augment_30min_seed0/model.pt ../shared/data/rmd17_ethanol/train.xyz \
        runs/self_distillation/ethanol_md.xyz --temperatures 300 500 --replicas 32 --time-fs 2000 --every 40
    OMP_NUM_THREADS=1 remul-ff train benchmarks/direct_forces/runs/augment_30min_seed0/config.yaml --no-progress \
        --set data.path=runs/self_distillation/ethanol_md.xyz --set data.train=6000 --set data.valid=400 \
        --set data.off_equilibrium=null --set model.direct_forces_layers=L \
        --set train.init_from=benchmarks/direct_forces/runs/augment_30min_seed0/model.pt \
        --set train.trainable=direct_forces_head --set loss.direct_forces_target=conservative \
        --set loss.energy_weight=0 --set loss.forces_weight=0 --set loss.stage_two_fraction=0 \
        --set train.lr=1e-3 --set train.max_minutes=15 --set train.eval_rotations=0 \
        --set output_dir=benchmarks/direct_forces/runs/augment-headfit<L>_45min_seed0
    python benchmarks/direct_forces.py

Writes ``benchmarks/results/direct_forces.{json,md}``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from accuracy_budget import energy_offsets, evaluate_run_parts, load_test_set
from perf._common import RESULTS, write_results

from remul_ff.training.evaluate import evaluate

HERE = Path(__file__).resolve().parent
RUNS = HERE / "direct_forces" / "runs"
RUN_NAME = re.compile(r"(?P<mode>.+)_(?P<budget>[\d.]+)min_seed(?P<seed>\d+)$")


def evaluate_run(run: Path, offset_eV: float) -> dict:
    model, config = evaluate_run_parts(run)
    e0s = torch.load(run / "model.pt", weights_only=True)["e0s"]
    report = evaluate(model, load_test_set("ethanol_500K", offset_eV), e0s, n_rotations=8)
    match = RUN_NAME.match(run.name)
    return {
        "run": str(run.relative_to(HERE.parent)),
        "recipe": match["mode"],
        "loss_mode": config["loss"]["mode"],
        "direct_forces_weight": config["loss"].get("direct_forces_weight", 10.0),
        "direct_forces_target": config["loss"].get("direct_forces_target", "labels"),
        "trainable": config["train"].get("trainable", "all"),
        "budget_min": float(match["budget"]),
        "seed": int(match["seed"]),
        "epochs": len((run / "log.csv").read_text().splitlines()) - 1,
        "test_force_mae_meV_A": report["forces_mae_meV_A"],
        "test_direct_force_mae_meV_A": report["direct_forces_mae_meV_A"],
        "direct_over_conservative": report["direct_forces_mae_meV_A"] / report["forces_mae_meV_A"],
        "test_direct_minus_conservative_mae_meV_A": report["direct_minus_conservative_mae_meV_A"],
        "test_energy_mae_meV": report["energy_mae_meV"],
        "rotational_force_error": report["equi_forces_rel"],
        "rotational_direct_force_error": report["equi_direct_forces_rel"],
    }


def default_recipe_rows() -> list[dict]:
    """The transformer without the head, 30 minutes (``results/accuracy_budget.json``), for reference: the
    earlier default recipe (one stage, ``loss.stage_two_fraction: 0``), the only one measured at 30 minutes."""
    rows = json.loads((RESULTS / "accuracy_budget.json").read_text())["rows"]
    return [r for r in rows if r["recipe"] == "default" and r["test_set"] == "ethanol_500K" and r["budget_min"] == 30]


def markdown(rows: list[dict], reference: list[dict]) -> str:
    lines = [
        "Test set `ethanol_500K` (200 PBE/def2-SVP frames), float64; rotational errors over 8 random rotations per frame.",
        "",
        "| recipe | loss | direct weight | direct target | trained | budget (min) | seed | epochs | conservative F MAE | direct F MAE "
        "| direct / conservative | direct - conservative MAE | E MAE (meV) | rotational error, conservative | rotational error, direct |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['loss_mode']} | {r['direct_forces_weight']:g} | {r['direct_forces_target']} | {r['trainable']} "
            f"| {r['budget_min']:g} | {r['seed']} | {r['epochs']} | {r['test_force_mae_meV_A']:.2f} "
            f"| {r['test_direct_force_mae_meV_A']:.2f} | {r['direct_over_conservative']:.2f} "
            f"| {r['test_direct_minus_conservative_mae_meV_A']:.2f} | {r['test_energy_mae_meV']:.2f} "
            f"| {100 * r['rotational_force_error']:.2f}% | {100 * r['rotational_direct_force_error']:.2f}% |"
        )
    if reference:
        maes = ", ".join(f"{r['test_force_mae_meV_A']:.2f}" for r in reference)
        lines += ["", f"Without the head, 30 minutes, the earlier one-stage default (accuracy_budget.json): force MAE {maes} meV/Å."]
    return "\n".join(lines) + "\n"


def main() -> None:
    offset = energy_offsets().get("rmd17_ethanol", 0.0)
    runs = sorted(p for p in RUNS.iterdir() if (p / "model.pt").exists() and RUN_NAME.match(p.name))
    rows = [evaluate_run(run, offset) for run in runs]
    reference = default_recipe_rows()
    write_results("direct_forces", {"rows": rows, "reference_without_head": reference}, markdown(rows, reference))
    print(markdown(rows, reference))


if __name__ == "__main__":
    main()
