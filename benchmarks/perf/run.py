"""The performance suite: every speed benchmark, with the arguments of its committed result, from one command.

The rest of ``benchmarks/`` are studies (accuracy against budget, MD stability, direct forces, the
scaling sweep, the learn loop, the labeller's test sets): each answers one question once, with its runs
committed beside it. This suite answers "how fast is it" again on any machine, side by side with the
baselines that the machine has (MACE and PET need their own venvs: ``--mace-python``, ``--pet-python``;
without them those columns are left out). Each benchmark writes its own ``results/<name>.{json,md}``;
this script writes ``results/perf_suite.md``: what ran, how long it took, whether it passed.

Run from the repository root::

    python benchmarks/perf/run.py [--only neighbors export_speed] [--mace-python /work/mace-venv/bin/python] [--dry-run]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # benchmarks/
ETHANOL_MODEL = "benchmarks/stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt"
EGNN_MODEL = "benchmarks/stability/rmd17_ethanol/egnn/model.pt"
DIRECT_FORCES_MODEL = "benchmarks/direct_forces/runs/remul_30min_seed0/model.pt"
ETHANOL_DATA = "../shared/data/rmd17_ethanol/train.xyz"


def suite(mace_python: str | None, pet_python: str | None) -> dict[str, list[str]]:
    """``{name: command}`` of every speed benchmark; ``name`` is also its results file's stem."""
    baselines = (["--mace-python", mace_python] if mace_python else []) + (["--pet-python", pet_python] if pet_python else [])
    return {
        "neighbors": ["benchmarks/perf/neighbors.py"],
        "export_speed": ["benchmarks/perf/export_speed.py", ETHANOL_MODEL, "--out", "benchmarks/results/export_speed.json"],
        "md_speed": [
            "benchmarks/perf/md_speed.py",
            "--model",
            ETHANOL_MODEL,
            "--egnn-model",
            EGNN_MODEL,
            "--batched-steps",
            "50",
            *baselines,
        ],
        "torchsim_speed": ["benchmarks/perf/torchsim_speed.py", "--model", ETHANOL_MODEL, "--data", ETHANOL_DATA, "--steps", "400"],
        "mts_speed": ["benchmarks/perf/mts_speed.py", "--model", DIRECT_FORCES_MODEL, "--drift-time-ps", "20", *baselines[:2]],
    }


def missing_inputs(command: list[str]) -> list[str]:
    """The script, model and data files a command names that are not there."""
    return [arg for arg in command if arg.endswith((".py", ".pt", ".xyz")) and not Path(arg).exists()]


def run(name: str, command: list[str]) -> dict:
    """Run one benchmark; its exit status and wall time."""
    line = shlex.join([sys.executable, *command])
    if missing := missing_inputs(command):
        return {"name": name, "command": line, "status": f"skipped: {', '.join(missing)} not found", "seconds": 0.0}
    start = time.perf_counter()
    status = subprocess.run([sys.executable, *command]).returncode
    return {
        "name": name,
        "command": line,
        "status": "ok" if status == 0 else f"failed (exit {status})",
        "seconds": time.perf_counter() - start,
    }


def write_summary(rows: list[dict]) -> Path:
    """``results/perf_suite.md``: one row per benchmark."""
    lines = ["Command: `python benchmarks/perf/run.py " + " ".join(sys.argv[1:]) + "`", ""]
    lines += ["| benchmark | status | minutes | results | command |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['status']} | {row['seconds'] / 60:.1f} | `results/{row['name']}.*` | `{row['command']}` |")
    path = HERE / "results" / "perf_suite.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="run only these benchmarks")
    parser.add_argument("--mace-python", help="python of a venv with mace-torch (omit to leave MACE out)")
    parser.add_argument("--pet-python", help="python of a venv with metatrain, for PET (omit to leave PET out)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and what they lack, run nothing")
    args = parser.parse_args()
    commands = suite(args.mace_python, args.pet_python)
    unknown = set(args.only or []) - set(commands)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(commands)}")
    chosen = {name: command for name, command in commands.items() if not args.only or name in args.only}
    if args.dry_run:
        for name, command in chosen.items():
            lacking = missing_inputs(command)
            print(f"{name}: {shlex.join(command)}" + (f"  [missing: {', '.join(lacking)}]" if lacking else ""))
        return
    print(f"wrote {write_summary([run(name, command) for name, command in chosen.items()])}")


if __name__ == "__main__":
    main()
