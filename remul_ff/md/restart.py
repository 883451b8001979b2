"""Restart files of MD runs: everything to continue a killed run exactly, and the check that a resumed
run is the run that wrote them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from ase import Atoms

from remul_ff.errors import RemulError
from remul_ff.md.monitor import Collapse, CollapseMonitor
from remul_ff.md.settings import MDSettings
from remul_ff.md.state import MDState

if TYPE_CHECKING:  # the output module imports this one
    from remul_ff.md.output import MDResult

RESTART_FILE = "restart.pt"
RESTART_KIND = "remul-ff-md-restart"


# What a resumed run must share with the run that wrote the restart file (the total time may grow).
RESUME_FIXED_SETTINGS = (
    "temperature",
    "timestep_fs",
    "thermostat",
    "friction",
    "tdamp_fs",
    "tchain",
    "seed",
    "write_interval",
    "thermo_interval",
    "traj_format",
    "bond_tolerance",
    "initial_velocities",
    "max_force_deviation",
    "on_deviation",
    "forces",
    "mts_k",
)


def run_signature(starts: Sequence[Atoms], settings: MDSettings, dtype: torch.dtype) -> dict:
    """The replicas' compositions, the model's precision and the protocol settings that a resumed run may not change."""
    return {
        "replicas": [a.get_chemical_formula() + ":" + "".join(a.get_chemical_symbols()) for a in starts],
        "dtype": str(dtype).removeprefix("torch."),
        **{name: getattr(settings, name) for name in RESUME_FIXED_SETTINGS},
    }


def check_same_run(saved: dict | None, now: dict, path: Path) -> None:
    if saved is None:
        return  # a restart file from before signatures were recorded
    if len(saved["replicas"]) != len(now["replicas"]) or saved["replicas"] != now["replicas"]:
        first = next((k for k, (a, b) in enumerate(zip(saved["replicas"], now["replicas"])) if a != b), None)
        detail = (
            f"{len(saved['replicas'])} replicas then, {len(now['replicas'])} now"
            if first is None
            else f"replica {first} was {saved['replicas'][first].split(':')[0]}, now {now['replicas'][first].split(':')[0]}"
        )
        raise RemulError(
            f"cannot resume from {path}: it was written for other starting structures ({detail}); "
            "resume with the same structure and --replicas, or use a new output folder."
        )
    if saved.get("dtype", now["dtype"]) != now["dtype"]:  # a continuation in another precision is not the same trajectory
        raise RemulError(
            f"cannot resume from {path}: it ran in {saved['dtype']}, but --dtype is {now['dtype']} now; "
            f"resume with --dtype {saved['dtype']}, or use a new output folder."
        )
    # A setting added after the file was written is compared with its default, which that run used.
    defaults = {f.name: f.default for f in dataclasses.fields(MDSettings)}
    changed = [name for name in RESUME_FIXED_SETTINGS if saved.get(name, defaults[name]) != now[name]]
    if changed:
        name = changed[0]
        raise RemulError(
            f"cannot resume from {path}: {name} was {saved.get(name, defaults[name])!r} but is {now[name]!r} now; "
            "resume with the same options (only --time may grow), or use a new output folder."
        )


def save_restart(
    path: Path,
    state: MDState,
    step: int,
    result: MDResult,
    monitor: CollapseMonitor,
    generator: torch.Generator,
    signature: dict,
    finished: bool = False,
    replica_steps_per_s: float = 0.0,
) -> None:
    from remul_ff.models.files import FORMAT_VERSION, save_file

    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(MDState) if not f.name.startswith("_")}  # no caches
    save_file(
        {
            "kind": RESTART_KIND,
            "format_version": FORMAT_VERSION,
            "step": step,
            "state": fields,
            "collapses": [asdict(c) for c in result.collapses],
            "flags": [asdict(c) for c in result.flags],
            "bonds": monitor.bonds,
            "bond_groups": monitor.groups,
            "reference": monitor.reference,
            "rng": generator.get_state(),
            "run": signature,
            "finished": finished,
            "replica_steps_per_s": replica_steps_per_s,
        },
        path,
    )


def load_restart(
    path: Path, result: MDResult, monitor: CollapseMonitor, generator: torch.Generator, device, signature: dict
) -> tuple[MDState, int, bool]:
    """The saved state, its step, and whether that run had finished (then ``result`` gets its rate)."""
    from remul_ff.models.files import load_file

    payload = load_file(path, RESTART_KIND)
    check_same_run(payload.get("run"), signature, path)
    if payload["step"] > result.n_steps:
        done_ps = payload["step"] * result.timestep_fs / 1e3
        raise RemulError(
            f"cannot resume from {path}: it has already simulated {done_ps:g} ps per replica, more than the "
            f"{result.n_steps * result.timestep_fs / 1e3:g} ps asked for; give a longer --time to continue it."
        )
    fields = payload["state"]
    state = MDState(
        **{k: v.to(device) if torch.is_tensor(v) else v for k, v in fields.items() if k != "thermostat"},
        thermostat={k: v.to(device) for k, v in fields["thermostat"].items()},
    )
    result.collapses = [Collapse(**c) for c in payload["collapses"]]
    result.flags = [Collapse(**c) for c in payload.get("flags", [])]
    monitor.bonds, monitor.reference = payload["bonds"].to(device), payload["reference"].to(device)
    # files from before fluxional groups: one group per bond
    monitor.groups = payload.get("bond_groups", torch.arange(len(monitor.bonds))).to(device)
    generator.set_state(payload["rng"])
    finished = bool(payload.get("finished")) and (payload["step"] >= result.n_steps or state.n_replicas == 0)
    result.replica_steps_per_s = float(payload.get("replica_steps_per_s", 0.0)) if finished else 0.0
    return state, payload["step"], finished
