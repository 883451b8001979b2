"""Batched molecular dynamics: state, integrators (plain functions), collapse detection, analysis.

Names load on first use, so ``remul_ff.md.settings`` (read by the command line to build its options)
imports without torch.
"""

import importlib

_HOMES = {
    "MDResult": "output",
    "run_md": "engine",
    "MDSettings": "settings",
    "default_max_temperature": "settings",
    "parse_duration_fs": "settings",
    "langevin_baoab_step": "integrators",
    "nose_hoover_chain_step": "integrators",
    "velocity_verlet_step": "integrators",
    "MDState": "state",
    "compute_forces": "state",
    "maxwell_boltzmann": "state",
    "state_from_atoms": "state",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'remul_ff.md' has no attribute {name!r}")
    return getattr(importlib.import_module(f"remul_ff.md.{_HOMES[name]}"), name)
