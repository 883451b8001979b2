"""ms per ASE MD step, shared by the peer helpers (mace_speed_helper.py, pet_speed_helper.py).

It needs only ASE, so each helper can import it from its own venv (the script's folder is on sys.path).
Each peer runs with the allocator setting that remul-ff's calculator makes for itself
(``remul_ff/utils/memory.py``, loaded by path: the peers' venvs have no remul-ff), so that setting
is not an advantage of one side.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet


def keep_freed_memory() -> bool:
    """remul-ff's :func:`remul_ff.utils.memory.keep_freed_memory`, for this process too."""
    spec = importlib.util.spec_from_file_location(
        "remul_ff_memory", Path(__file__).resolve().parents[2] / "remul_ff" / "utils" / "memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.keep_freed_memory()


def ms_per_step(calculator, path: str, steps: int) -> float:
    """Wall ms per VelocityVerlet step (0.5 fs) of the first frame of ``path``, after 5 warm-up steps."""
    atoms = read(path, index=0)
    atoms.pbc = False
    return atoms_ms_per_step(atoms, calculator, steps)


def atoms_ms_per_step(atoms, calculator, steps: int) -> float:
    """Wall ms per VelocityVerlet step (0.5 fs) of a copy of ``atoms``, after 5 warm-up steps."""
    keep_freed_memory()
    atoms = atoms.copy()
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(5)
    start = time.perf_counter()
    dyn.run(steps)
    return 1e3 * (time.perf_counter() - start) / steps
