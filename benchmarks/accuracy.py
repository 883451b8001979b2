"""Accuracy, equivariance and training cost of the REMUL transformer on rMD17 ethanol, per training mode.

Each mode (``remul`` fixed weights, ``remul`` GradNorm, ``augment``, ``none``) trains with the same
CPU budget: ``--threads`` torch threads for ``--minutes`` of wall time (so threads x minutes
CPU-minutes), ``--parallel`` modes at a time. Then every model is evaluated on the 50 validation
frames with K=32 random rotations.

Run from the repository root::

    python benchmarks/accuracy.py --data ../shared/data/rmd17_ethanol --minutes 15

Writes ``benchmarks/results/accuracy.{json,md,png}`` and keeps the runs in ``runs/accuracy/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from perf._common import RESULTS, write_results

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "remul-fixed": ["loss.mode=remul", "loss.weighting=fixed"],
    "remul-gradnorm": ["loss.mode=remul", "loss.weighting=gradnorm"],
    "augment": ["loss.mode=augment"],
    "none": ["loss.mode=none"],
}


def train_command(mode: str, args: argparse.Namespace) -> list[str]:
    data = Path(args.data)
    overrides = [
        f"output_dir={args.runs / mode}",
        f"data.path={data / 'train.xyz'}",
        f"data.e0s={data / 'isolated_atoms.xyz'}",
        f"train.max_minutes={args.minutes}",
        f"train.num_threads={args.threads}",
        f"train.seed={args.seed}",
        *MODES[mode],
        *args.set,
    ]
    command = [sys.executable, "-m", "remul_ff", "train", str(ROOT / "examples" / "rmd17_ethanol.yaml"), "--no-progress"]
    return command + [x for item in overrides for x in ("--set", item)]


def train_all(modes: list[str], args: argparse.Namespace) -> None:
    """Train ``args.parallel`` modes at a time, each in its own process with its own log file."""
    for start in range(0, len(modes), args.parallel):
        group = modes[start : start + args.parallel]
        running = []
        for mode in group:
            (args.runs / mode).mkdir(parents=True, exist_ok=True)
            log = open(args.runs / mode / "stdout.txt", "w")
            running.append(subprocess.Popen(train_command(mode, args), stdout=log, stderr=subprocess.STDOUT))
        for process, mode in zip(running, group):
            if process.wait() != 0:
                raise SystemExit(f"training {mode} failed; see {args.runs / mode / 'stdout.txt'}")


def evaluate_mode(mode: str, args: argparse.Namespace) -> dict:
    out = args.runs / mode / "eval.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "remul_ff",
            "evaluate",
            str(args.runs / mode / "model.pt"),
            str(valid_file(args, mode)),
            "--rotations",
            "32",
            "--dtype",
            "float64",
            "--json",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    report = json.loads(out.read_text())
    log = list(csv.DictReader(open(args.runs / mode / "log.csv")))
    report["epochs"] = len(log)
    report["wall_time_s"] = float(log[-1]["wall_time_s"])
    report["structures_per_s"] = sum(float(r["structures_per_s"]) for r in log) / len(log)
    report["cpu_minutes"] = args.threads * report["wall_time_s"] / 60
    report["curve"] = [(float(r["wall_time_s"]), float(r["val_forces_mae_meV_A"])) for r in log]
    report["final_alpha_beta"] = (float(log[-1]["alpha"]), float(log[-1]["beta"]))
    return report


def valid_file(args: argparse.Namespace, mode: str) -> Path:
    """The run's own validation frames (indices from its splits.json), as an extxyz file."""
    import ase.io

    splits = json.loads((args.runs / mode / "splits.json").read_text())
    subset = args.runs / mode / "valid.xyz"
    frames = ase.io.read(Path(args.data) / "train.xyz", index=":")
    ase.io.write(subset, [frames[i] for i in splits["valid"]], format="extxyz")
    return subset


def markdown(results: dict[str, dict], args: argparse.Namespace) -> str:
    rows = [
        f"rMD17 ethanol, 950 train / 50 validation (split seed 0), {args.threads} thread(s) x {args.minutes} min per mode; "
        "validation metrics with EMA weights, K=32 rotations, float64 evaluation.\n",
        "| mode | epochs | structures/s | CPU-min | E MAE (meV) | F MAE (meV/Å) | F equi rel | E equi rel "
        "| Shen % (task) | Shen % (forces) | final α, β |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        rows.append(
            f"| {mode} | {r['epochs']} | {r['structures_per_s']:.0f} | {r['cpu_minutes']:.1f} | {r['energy_mae_meV']:.2f} | "
            f"{r['forces_mae_meV_A']:.2f} | {r['equi_forces_rel']:.2e} | {r['equi_energy_rel']:.2e} | {r['shen_task_percent']:.3f} | "
            f"{r['shen_forces_percent']:.3f} | {r['final_alpha_beta'][0]:.2f}, {r['final_alpha_beta'][1]:.2f} |"
        )
    return "\n".join(rows) + "\n"


def plot(results: dict[str, dict]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, r in results.items():
        t, mae = zip(*r["curve"])
        ax.plot([x / 60 for x in t], mae, label=mode)
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("validation force MAE (meV/Å)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("rMD17 ethanol: accuracy at equal CPU budget")
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "rmd17_ethanol"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every mode")
    parser.add_argument("--skip-training", action="store_true", help="only evaluate existing runs")
    args = parser.parse_args()
    if not args.skip_training:
        train_all(args.modes, args)
    results = {mode: evaluate_mode(mode, args) for mode in args.modes}
    write_results("accuracy", {"minutes": args.minutes, "threads": args.threads, "results": results}, markdown(results, args))
    plot(results)
    print(markdown(results, args))


if __name__ == "__main__":
    main()
