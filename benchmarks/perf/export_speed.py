"""Energy and forces of one molecule: the ASE calculator (plain and ``compile=True``), the
torch.export program and the AOTInductor package of the same model, timed in one run (issue 15,
and issue 13's single-molecule CPU path).

    python benchmarks/perf/export_speed.py MODEL.pt --molecule ethanol --out benchmarks/results/export_speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from remul_ff.data.generate import load_molecule
from remul_ff.integrations import REMULCalculator
from remul_ff.models.export import export_model


def ms_per_call(call, positions: list[np.ndarray], repeat: int) -> float:
    """Median over ``repeat`` rounds of the mean wall time (ms) of ``call`` on each of ``positions``."""
    call(positions[0])  # warm-up
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for x in positions:
            call(x)
        rounds.append(1e3 * (time.perf_counter() - start) / len(positions))
    return float(np.median(rounds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--molecule", default="ethanol")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    atoms = load_molecule(args.molecule)
    rng = np.random.default_rng(0)
    positions = [atoms.positions + rng.normal(scale=0.02, size=atoms.positions.shape) for _ in range(50)]
    numbers = torch.tensor(atoms.numbers)
    calc = REMULCalculator(args.model, device="cpu", default_dtype=args.dtype)
    fast = REMULCalculator(args.model, device="cpu", default_dtype=args.dtype, compile=True)

    def ase_call(x, calculator=calc):
        atoms.positions = x
        calculator.calculate(atoms, ["energy", "forces"])

    with tempfile.TemporaryDirectory() as tmp:
        program = torch.export.load(export_model(args.model, Path(tmp) / "p.pt2", dtype)).module()
        package = torch._inductor.aoti_load_package(str(export_model(args.model, Path(tmp) / "a.pt2", dtype, aotinductor=True)))
        timings = {
            "ase_calculator": ms_per_call(ase_call, positions, 5),
            "ase_calculator_compiled": ms_per_call(lambda x: ase_call(x, fast), positions, 5),
            "torch_export_program": ms_per_call(lambda x: program(torch.tensor(x, dtype=dtype), numbers), positions, 5),
            "aotinductor_package": ms_per_call(lambda x: package(torch.tensor(x, dtype=dtype), numbers), positions, 5),
        }
    result = {
        "command": " ".join(["python", *sys.argv]),
        "molecule": args.molecule,
        "atoms": len(atoms),
        "dtype": args.dtype,
        "threads": args.threads,
        "torch": torch.__version__,
        "ms_per_call": timings,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
