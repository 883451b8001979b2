"""Replay one round of a ``remul-ff learn`` run with the added frames' energy weight changed.

Fine-tunes the round's first committee member from the previous round's model, as the loop does
(its own ``config.yaml``), once per energy weight on the added frames (the frames after the
``n_start`` starting frames), and prints the test set's energy offset and MAEs::

    OMP_NUM_THREADS=1 python benchmarks/learn/replay_energy_weight.py runs/learn_ethanol/round_04 \\
        --start 50 --weights 1 0.1 0.01 0 --test benchmarks/test_sets/ethanol_500K.xyz

(``benchmarks/learn/README.md`` has the table this gave; the runs ran two at a time, one thread each.)
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from remul_ff.data.generate import write_extxyz
from remul_ff.data.readers import read_structures
from remul_ff.learn.loop import accuracy_on
from remul_ff.models import load_model


def replay(round_dir: Path, n_start: int, weight: float, out: Path) -> Path:
    """Train the replayed member with ``weight`` on the added frames' energies; returns its model file."""
    frames = read_structures(round_dir / "data.xyz")
    for frame in frames[n_start:]:
        frame.energy_weight = weight
    out.mkdir(parents=True, exist_ok=True)
    write_extxyz(frames, out / "data.xyz")
    config = round_dir / "model_0" / "config.yaml"
    command = ["remul-ff", "train", str(config), "--no-progress", "--overwrite"]
    subprocess.run([*command, "--set", f"data.path={out / 'data.xyz'}", "--set", f"output_dir={out / 'run'}"], check=True)
    return out / "run" / "model.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round_dir", type=Path)
    parser.add_argument("--start", type=int, required=True, help="how many of the data's first frames are the starting frames")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.1, 0.01, 0.0])
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/replay_energy_weight"))
    args = parser.parse_args()
    test = read_structures(args.test)
    print("| added frames' energy weight | test energy offset (meV) | test energy MAE (meV) | test force MAE (meV/Å) |")
    for weight in args.weights:
        row = accuracy_on(load_model(replay(args.round_dir, args.start, weight, args.out / f"w{weight:g}")), test)
        print(f"| {weight:g} | {row['energy_offset_meV']:+.1f} | {row['energy_mae_meV']:.1f} | {row['forces_mae_meV_A']:.1f} |")


if __name__ == "__main__":
    main()
