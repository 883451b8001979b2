"""Time PET's (metatrain) ASE calculator per MD step; run by md_speed.py with the Python of a venv that has metatrain.

metatrain brings its own stack (metatensor, metatomic), so it lives in its own venv::

    python -m venv ../pet-venv && ../pet-venv/bin/pip install torch==2.13.0 metatrain

The model is untrained (weights do not change its speed), with metatrain's default PET hyperparameters
(d_pet 128, 2 GNN layers of 2 attention layers, cutoff 4.5 Å). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys

import torch
from _ase_timing import ms_per_step
from metatomic_ase import MetatomicCalculator
from metatrain.pet import PET
from metatrain.utils.architectures import get_default_hypers
from metatrain.utils.data import DatasetInfo
from metatrain.utils.data.target_info import get_energy_target_info


def build_calculator(elements: list[int], dtype: torch.dtype) -> MetatomicCalculator:
    info = DatasetInfo(length_unit="angstrom", atomic_types=elements, targets={"energy": get_energy_target_info("energy", {"unit": "eV"})})
    model = PET(get_default_hypers("pet")["model"], info).to(dtype)
    return MetatomicCalculator(model.export(), device="cpu")


def main() -> None:
    structures, steps = json.loads(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    results = {"metatrain_version": __import__("metatrain").__version__, "ms_per_step": {}}
    for dtype in ("float32", "float64"):
        calculator = build_calculator([1, 6, 7, 8], getattr(torch, dtype))
        for name, path in structures.items():
            results["ms_per_step"][f"{name}/{dtype}"] = ms_per_step(calculator, path, steps)
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
