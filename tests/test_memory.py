"""remul_ff.utils.memory: freed buffers are reused instead of faulted in again (glibc only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's (Linux)")

# An MD step in miniature: ten 1 MiB buffers made, touched and freed, twenty times; prints
# whether the setting applied and the page faults of the last nineteen steps.
STEPS = """
import resource, sys
import numpy as np
applied = None
if sys.argv[1] == "keep":
    from remul_ff.utils.memory import keep_freed_memory
    applied = keep_freed_memory()
def step():
    buffers = [np.ones(2**18, dtype=np.float32) for _ in range(10)]
    return sum(float(b[-1]) for b in buffers)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(19):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run_steps(mode: str, **env: str) -> tuple[str, int]:
    """``(applied, page faults)`` of :data:`STEPS` in a fresh interpreter (the setting lasts for the process)."""
    root = Path(__file__).resolve().parent.parent
    environment = {**os.environ, "PYTHONPATH": str(root), **env}
    output = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True, env=environment)
    applied, faults = output.stdout.split()
    return applied, int(faults)


def test_freed_buffers_are_reused_without_page_faults():
    applied, faults = _run_steps("keep")
    _, default_faults = _run_steps("default")
    assert applied == "True"
    # each step's 10 MiB is 2560 pages: by default glibc hands them back and faults them in again
    assert default_faults > 19 * 1000, "glibc's default no longer returns the memory; the test needs a new pattern"
    assert faults < 100


def test_the_environment_can_leave_the_allocator_alone():
    applied, faults = _run_steps("keep", REMUL_FF_KEEP_FREED_MEMORY="0")
    assert applied == "False"
    assert faults > 19 * 1000


def test_a_calculator_and_an_md_run_leave_the_allocator_alone_and_the_program_sets_it(trained_model_file, monkeypatch):
    from ase.build import molecule

    from remul_ff import cli
    from remul_ff.integrations import REMULCalculator
    from remul_ff.md import MDSettings, run_md
    from remul_ff.utils import memory

    calls = []
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setattr(memory, "_set_glibc_thresholds", lambda: calls.append("mallopt") or True)
    atoms = molecule("CH3CH2OH")
    atoms.calc = REMULCalculator(str(trained_model_file))
    atoms.get_forces()
    run_md(str(trained_model_file), atoms, MDSettings(total_time_fs=2, write_interval=0), progress=False)
    assert calls == []  # a library call changes nothing process-wide
    monkeypatch.setattr(cli, "main", lambda: 0)
    assert cli.console() == 0 and calls == ["mallopt"]  # the remul-ff program, a process of its own, asks
