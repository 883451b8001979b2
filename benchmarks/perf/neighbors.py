"""Time the batched radius graph: pure-torch and torch-cluster backends against brute force.

Run from the repository root: ``python benchmarks/perf/neighbors.py``. Writes
``benchmarks/results/neighbors.{json,md,png}``. All ratios come from the same run.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _common import RESULTS, median_seconds, write_results
from ase.build import molecule

from remul_ff.data.neighbors import available_backends, radius_graph, radius_graph_brute_force

CASES = {"64 x 21 atoms": (64, 21), "1024 x 9 atoms": (1024, 9)}


def molecule_batch(n_mol: int, n_atoms: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Molecule-like batches: ethanol when 9 atoms, otherwise random atoms at liquid-like density."""
    gen = torch.Generator().manual_seed(seed)
    if n_atoms == 9:
        base = torch.as_tensor(molecule("CH3CH2OH").positions)
        positions = base.repeat(n_mol, 1) + 0.1 * torch.randn(n_mol * 9, 3, generator=gen, dtype=torch.float64)
    else:
        positions = torch.rand(n_mol * n_atoms, 3, generator=gen, dtype=torch.float64) * n_atoms ** (1 / 3) * 1.4
    return positions.float(), torch.arange(n_mol).repeat_interleave(n_atoms)


def time_case(n_mol: int, n_atoms: int, cutoff: float, repeat: int) -> dict[str, float]:
    positions, molecule_index = molecule_batch(n_mol, n_atoms)
    timings = {"brute_force": median_seconds(lambda: radius_graph_brute_force(positions, cutoff, molecule_index), repeat)}
    for backend in available_backends():
        timings[backend] = median_seconds(lambda backend=backend: radius_graph(positions, cutoff, molecule_index, backend=backend), repeat)
    timings["edges"] = int(radius_graph(positions, cutoff, molecule_index)[0].shape[1])
    return timings


def plot(results: dict[str, dict[str, float]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    methods = [k for k in next(iter(results.values())) if k != "edges"]
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        ax.bar([i + k * width for i in range(len(results))], [r[method] * 1e3 for r in results.values()], width, label=method)
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(results))], list(results))
    ax.set_ylabel("ms per batch graph (median)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Batched radius graph, cutoff 5 Å, float32, CPU")
    fig.tight_layout()
    fig.savefig(RESULTS / "neighbors.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    results = {name: time_case(n_mol, n_atoms, args.cutoff, args.repeat) for name, (n_mol, n_atoms) in CASES.items()}
    rows = ["| batch | edges | brute force (ms) | " + " | ".join(f"{b} (ms) | brute/{b}" for b in available_backends()) + " |"]
    rows.append("|---" * (3 + 2 * len(available_backends())) + "|")
    for name, r in results.items():
        cells = [f"{r[b] * 1e3:.2f} | {r['brute_force'] / r[b]:.1f}x" for b in available_backends()]
        rows.append(f"| {name} | {r['edges']} | {r['brute_force'] * 1e3:.2f} | " + " | ".join(cells) + " |")
    write_results("neighbors", {"cutoff": args.cutoff, "seconds": results}, "\n".join(rows) + "\n")
    plot(results)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
