"""Batched molecular dynamics: state, integrators (plain functions), collapse detection, analysis."""

from remul_ff.md.engine import MDResult, MDSettings, default_max_temperature, parse_duration_fs, run_md
from remul_ff.md.integrators import langevin_baoab_step, nose_hoover_chain_step, velocity_verlet_step
from remul_ff.md.state import MDState, compute_forces, maxwell_boltzmann, state_from_atoms

__all__ = [
    "MDResult",
    "MDSettings",
    "MDState",
    "compute_forces",
    "default_max_temperature",
    "langevin_baoab_step",
    "maxwell_boltzmann",
    "nose_hoover_chain_step",
    "parse_duration_fs",
    "run_md",
    "state_from_atoms",
    "velocity_verlet_step",
]
