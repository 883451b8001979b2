"""Time MACE's ASE calculator per MD step; run by md_speed.py with the Python of a venv that has mace-torch.

mace-torch pins its own e3nn, so it lives in its own venv::

    python -m venv ../mace-venv && ../mace-venv/bin/pip install torch==2.13.0 mace-torch

The model is untrained (weights do not change its speed): 128x0e+128x1o, r_max 5 Å, 2 interactions,
correlation order 3, l_max 3, as MACE's published MD17 models. Prints one JSON line.
"""

from __future__ import annotations

import copy
import json
import os
import sys

# mace-torch pins e3nn 0.4.4, which torch.load()s its own constants without weights_only=False;
# torch >= 2.6 then refuses them. This opt-out applies to this MACE-only helper process alone.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np
import torch
from _ase_timing import ms_per_step
from e3nn import o3
from mace import modules
from mace.calculators import MACECalculator


def build_model(elements: list[int]) -> torch.nn.Module:
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=interaction, interaction_cls_first=interaction, num_interactions=2,
        num_elements=len(elements), hidden_irreps=o3.Irreps("128x0e+128x1o"), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(elements)), avg_num_neighbors=8.0, atomic_numbers=elements, correlation=3,
        gate=torch.nn.functional.silu, atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )


def main() -> None:
    structures, steps = json.loads(sys.argv[1]), int(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"  # gpu_speed.py passes cuda
    torch.manual_seed(0)
    model = build_model([1, 6, 7, 8])
    results = {"mace_version": __import__("mace").__version__, "ms_per_step": {}}
    for dtype in ("float32", "float64"):
        # models= takes the module itself (model_paths would torch.load a pickled module).
        calculator = MACECalculator(models=[copy.deepcopy(model)], device=device, default_dtype=dtype)
        for name, path in structures.items():
            results["ms_per_step"][f"{name}/{dtype}"] = ms_per_step(calculator, path, steps)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
