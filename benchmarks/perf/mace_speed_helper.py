"""Time MACE's ASE calculator per MD step; run by md_speed.py with the Python of a venv that has mace-torch.

mace-torch pins its own e3nn, so it lives in its own venv::

    python -m venv ../mace-venv && ../mace-venv/bin/pip install torch==2.13.0 mace-torch

The model is untrained (weights do not change its speed): 128x0e+128x1o, r_max 5 Å, 2 interactions,
correlation order 3, l_max 3, as MACE's published MD17 models. Prints one JSON line.

Arguments: structures (JSON name → file), ASE steps, device (default cpu) and, optionally, a JSON list of
replica counts: then MACE's energy and forces of that many copies of the first structure in one batch
are timed too (µs per atom; no neighbour list and no integration, so a lower bound for an MD step).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

# mace-torch pins e3nn 0.4.4, which torch.load()s its own constants without weights_only=False;
# torch >= 2.6 then refuses them. This opt-out applies to this MACE-only helper process alone.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np
import torch
from _ase_timing import ms_per_step
from ase.io import read
from e3nn import o3
from mace import data, modules
from mace.calculators import MACECalculator
from mace.tools import torch_geometric, torch_tools, utils

ELEMENTS = [1, 6, 7, 8]


def build_model(elements: list[int]) -> torch.nn.Module:
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=5.0,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=interaction,
        interaction_cls_first=interaction,
        num_interactions=2,
        num_elements=len(elements),
        hidden_irreps=o3.Irreps("128x0e+128x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(elements)),
        avg_num_neighbors=8.0,
        atomic_numbers=elements,
        correlation=3,
        gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )


def batched_us_per_atom(model: torch.nn.Module, path: str, replicas: int, device: str, repeat: int = 10) -> float:
    """µs per atom of one energy-and-forces call on ``replicas`` copies of the structure, float32."""
    model = copy.deepcopy(model).float().to(device)
    config = data.config_from_atoms(read(path))
    with torch_tools.default_dtype("float32"):
        one = data.AtomicData.from_config(config, z_table=utils.AtomicNumberTable(ELEMENTS), cutoff=5.0)
    batch = torch_geometric.batch.Batch.from_data_list([one] * replicas).to(device).to_dict()
    call = lambda: model(batch, compute_force=True, training=False)["forces"].sum().item()  # .item() waits for the GPU
    call(), call()  # warm-up: CUDA context, cuBLAS handles
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat / (replicas * len(config.atomic_numbers)) * 1e6


def main() -> None:
    structures, steps = json.loads(sys.argv[1]), int(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"  # gpu_speed.py passes cuda
    torch.manual_seed(0)
    model = build_model(ELEMENTS)
    results = {"mace_version": __import__("mace").__version__, "ms_per_step": {}}
    for dtype in ("float32", "float64"):
        # models= takes the module itself (model_paths would torch.load a pickled module).
        calculator = MACECalculator(models=[copy.deepcopy(model)], device=device, default_dtype=dtype)
        for name, path in structures.items():
            results["ms_per_step"][f"{name}/{dtype}"] = ms_per_step(calculator, path, steps)
    if len(sys.argv) > 4:
        first = next(iter(structures.values()))
        results["batched_us_per_atom_float32"] = {n: batched_us_per_atom(model, first, n, device) for n in json.loads(sys.argv[4])}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
