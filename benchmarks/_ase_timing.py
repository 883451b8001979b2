"""ms per ASE MD step, shared by the peer helpers (mace_speed_helper.py, pet_speed_helper.py).

It needs only ASE, so each helper can import it from its own venv (the script's folder is on sys.path).
"""

from __future__ import annotations

import time

from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet


def ms_per_step(calculator, path: str, steps: int) -> float:
    """Wall ms per VelocityVerlet step (0.5 fs) of the first frame of ``path``, after 5 warm-up steps."""
    atoms = read(path, index=0)
    atoms.pbc = False
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(5)
    start = time.perf_counter()
    dyn.run(steps)
    return 1e3 * (time.perf_counter() - start) / steps
