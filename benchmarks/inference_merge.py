"""Speed of the transformer's merged inference copy (``model.for_inference()``) against the model as trained.

The copy folds the edge MLP's last layer into the blocks' edge projections and makes those in one
matrix product; energies and forces are the same to rounding. The two are timed interleaved
(alternating blocks of calls, medians over blocks) so that a busy machine slows both alike:

* the compiled single-molecule program (``REMULCalculator(..., compile=True)``'s AOTInductor package)
  on the first frame of rMD17 ethanol (9 atoms) and of 3BPA (27 atoms), float32;
* energy and forces of 64 ethanol replicas as one batch, eager float32 (the batched MD engine's force call).

Usage::

    python benchmarks/inference_merge.py --ethanol-model stability/rmd17_ethanol_500K/remul_offeq_f02/model.pt \\
        --3bpa-model stability/3bpa_300K/remul_offeq/model.pt
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from ase.io import read
from perf._common import write_results

from remul_ff.data.batch import Structure, collate
from remul_ff.models import predict
from remul_ff.models.export import compiled_model
from remul_ff.models.files import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def interleaved_ms(calls: dict[str, callable], blocks: int, per_block: int) -> dict[str, dict]:
    """Median ms per call of each entry of ``calls``, timed in alternating blocks (order flipped each block)."""
    times = {name: [] for name in calls}
    for block in range(blocks):
        for name in list(calls) if block % 2 == 0 else list(calls)[::-1]:
            calls[name]()  # warm
            start = time.perf_counter()
            for _ in range(per_block):
                calls[name]()
            times[name].append(1e3 * (time.perf_counter() - start) / per_block)
    return {name: {"median_ms": statistics.median(t), "blocks_ms": t} for name, t in times.items()}


def first_frame(xyz: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred float32 positions and the atomic numbers of the first frame of ``xyz``."""
    atoms = read(xyz, index=0)
    return torch.tensor(atoms.positions - atoms.positions.mean(0), dtype=torch.float32), torch.as_tensor(atoms.numbers)


def compiled_programs(model_path: str, xyz: Path, blocks: int) -> dict:
    """Interleaved compiled-program timings, and the largest force difference between the two."""
    model = load_model(model_path, "cpu", torch.float32).eval().requires_grad_(False)
    positions, numbers = first_frame(xyz)
    programs = {"as trained": compiled_model(model), "merged": compiled_model(model.for_inference())}
    forces = [program(positions, numbers)[1] for program in programs.values()]
    result = interleaved_ms({name: (lambda p=p: p(positions, numbers)) for name, p in programs.items()}, blocks, 100)
    return {
        "atoms": len(numbers),
        "timings": result,
        "max_force_difference_eV_A": float((forces[0] - forces[1]).abs().max()),
        "speedup": result["as trained"]["median_ms"] / result["merged"]["median_ms"],
    }


def batched_forces(model_path: str, replicas: int, blocks: int) -> dict:
    """Interleaved eager energy-and-forces timings of ``replicas`` ethanol frames as one batch."""
    model = load_model(model_path, "cpu", torch.float32).eval().requires_grad_(False)
    frames = read(DATA / "rmd17_ethanol" / "train.xyz", index=f":{replicas}")
    batch = collate([Structure(a.positions, a.numbers) for a in frames], dtype=torch.float32)
    models = {"as trained": model, "merged": model.for_inference()}
    result = interleaved_ms({name: (lambda m=m: predict(m, batch)) for name, m in models.items()}, blocks, 20)
    return {"replicas": replicas, "timings": result, "speedup": result["as trained"]["median_ms"] / result["merged"]["median_ms"]}


def markdown(results: dict) -> str:
    rows = ["| what | as trained (ms) | merged (ms) | speedup | per-block ratios |", "|---|---|---|---|---|"]
    for name, entry in results["cases"].items():
        t = entry["timings"]
        ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(t["as trained"]["blocks_ms"], t["merged"]["blocks_ms"]))
        rows.append(
            f"| {name} | {t['as trained']['median_ms']:.2f} | {t['merged']['median_ms']:.2f} | **{entry['speedup']:.2f}x** | {ratios} |"
        )
    diffs = ", ".join(
        f"{n}: {e['max_force_difference_eV_A']:.1e} eV/Å" for n, e in results["cases"].items() if "max_force_difference_eV_A" in e
    )
    return "\n".join(rows) + f"\n\nLargest float32 force difference between the two programs: {diffs}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ethanol-model", required=True)
    parser.add_argument("--3bpa-model", dest="bpa_model", required=True)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = {
        "compiled program, ethanol (9 atoms)": compiled_programs(args.ethanol_model, DATA / "rmd17_ethanol" / "train.xyz", args.blocks),
        "compiled program, 3BPA (27 atoms)": compiled_programs(args.bpa_model, DATA / "3bpa" / "train_300K.xyz", args.blocks),
        "eager energy and forces, 64 ethanol replicas": batched_forces(args.ethanol_model, 64, args.blocks),
    }
    results = {"threads": args.threads, "cases": cases}
    write_results("inference_merge", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
