"""Batched MD driver: R replicas, one model call per step, collapse detection, trajectories and thermo.

Outputs in ``output_dir``:

* ``replica_NNN.traj`` (or ``.xyz``): frames every ``write_interval`` steps;
* ``thermo.csv``: ``replica, step, time_ps, temperature_K, e_pot_eV, e_kin_eV, e_tot_eV, conserved_eV``;
* ``collapses.json``: for every collapsed replica the step, time and reason;
* with a committee (:class:`~remul_ff.models.committee.Committee`): a ``max_force_dev_eV_A``
  column in ``thermo.csv`` and ``uncertain.json``, the first check at which each replica's force
  deviation passed ``max_force_deviation``.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms, units
from ase.io.trajectory import Trajectory
from torch import nn
from tqdm import tqdm

from remul_ff.config import reject_unknown
from remul_ff.data.batch import check_molecule
from remul_ff.errors import DataError, RemulError
from remul_ff.md import integrators
from remul_ff.md.analysis import stability_time_ps
from remul_ff.md.graphs import HostThenDevice, StepGraph, graphable
from remul_ff.md.monitor import Collapse, CollapseMonitor
from remul_ff.md.settings import (  # noqa: F401 (re-exported: remul_ff.md.engine was their home)
    COMMAND_LINE_MD_SETTINGS,
    DEVIATION_ACTIONS,
    LONGEST_TIMESTEP_WITH_H_FS,
    THERMOSTATS,
    TIME_UNITS_FS,
    MDSettings,
    default_max_temperature,
    parse_duration_fs,
)
from remul_ff.md.state import MDState, compute_forces, maxwell_boltzmann, state_from_atoms
from remul_ff.models.committee import Committee, max_force_deviation
from remul_ff.models.common import inference_model, with_fixed_pairs
from remul_ff.models.files import load_model
from remul_ff.utils.io import atomic_path, check_output_path, remove_stale_temporaries
from remul_ff.utils.memory import keep_freed_memory
from remul_ff.utils.progress import progress_bar

THERMO_COLUMNS = ["replica", "step", "time_ps", "temperature_K", "e_pot_eV", "e_kin_eV", "e_tot_eV", "conserved_eV"]
RESTART_FILE = "restart.pt"
RESTART_KIND = "remul-ff-md-restart"
MAX_OPEN_TRAJECTORIES = 256  # far below the usual limit of 1024 open files per process


@dataclass
class MDResult:
    """Summary of a batched MD run."""

    n_replicas: int
    n_steps: int
    timestep_fs: float
    collapses: list[Collapse] = field(default_factory=list)
    flags: list[Collapse] = field(default_factory=list)
    wall_time_s: float = 0.0
    replica_steps_per_s: float = 0.0
    output_dir: str | None = None

    def stability_times_ps(self) -> list[float]:
        """Simulated time before collapse for each replica (the full time when it never collapsed)."""
        collapsed = {c.replica: c.time_ps for c in self.collapses}
        times = [collapsed.get(r) for r in range(self.n_replicas)]
        return stability_time_ps(times, self.n_steps * self.timestep_fs / 1e3).tolist()


class _Writers:
    """Trajectory and thermo files, one trajectory per replica."""

    def __init__(
        self, output_dir: Path, settings: MDSettings, n_replicas: int, resume_step: int | None = None, committee: bool = False
    ) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.settings, self.output_dir, self.committee = settings, output_dir, committee
        suffix = "traj" if settings.traj_format == "traj" else "xyz"
        self.paths = [output_dir / f"replica_{r:03d}.{suffix}" for r in range(n_replicas)]
        if resume_step is not None:
            self._truncate(resume_step)
        mode = "w" if resume_step is None else "a"
        self.trajectories = _TrajectoryPool(self.paths, mode) if settings.traj_format == "traj" else None
        for p in self.paths if self.trajectories is None and resume_step is None else []:
            p.write_text("")
        self.thermo_file = open(output_dir / "thermo.csv", mode, newline="")
        self.thermo = csv.writer(self.thermo_file)
        if resume_step is None:
            self.thermo.writerow(THERMO_COLUMNS + (["max_force_dev_eV_A"] if committee else []))

    def _truncate(self, step: int) -> None:
        """Drop what a killed run wrote after its last restart file, so nothing is written twice.

        Only the frames up to ``step`` are read, so a frame torn by the kill (always after the
        last restart file) is dropped without being parsed.
        """
        rows = list(csv.reader(open(self.output_dir / "thermo.csv")))
        with atomic_path(self.output_dir / "thermo.csv") as tmp:
            with open(tmp, "w", newline="") as handle:
                csv.writer(handle).writerows([rows[0]] + [r for r in rows[1:] if int(r[1]) <= step])
        keep = step // self.settings.write_interval + 1 if self.settings.write_interval else 0
        for path in self.paths:
            frames = _first_frames(path, keep, self.settings.traj_format)
            with atomic_path(path) as tmp:
                ase.io.write(tmp, frames[:keep], format="traj" if self.settings.traj_format == "traj" else "extxyz")

    def frames(self, state: MDState) -> None:
        for (rid, atoms), energy, forces in zip(state.replica_atoms(), state.energy.tolist(), _split_forces(state)):
            atoms.calc = _single_point(atoms, energy, forces)
            if self.trajectories is not None:
                self.trajectories.write(rid, atoms)
            else:
                ase.io.write(self.paths[rid], atoms, format="extxyz", append=True)

    def thermo_rows(self, state: MDState, step: int, kT: float) -> None:
        kinetic, conserved = state.kinetic_energy().tolist(), integrators.conserved_energy(state, kT).tolist()
        temperature, energy = state.temperature().tolist(), state.energy.tolist()
        deviation = [] if state.force_deviation is None else [[f"{d:.5f}"] for d in state.force_deviation.tolist()]
        time_ps = step * self.settings.timestep_fs / 1e3
        for k, rid in enumerate(state.replica_id.tolist()):
            self.thermo.writerow(
                [
                    rid,
                    step,
                    f"{time_ps:.6f}",
                    f"{temperature[k]:.3f}",
                    f"{energy[k]:.8f}",
                    f"{kinetic[k]:.8f}",
                    f"{energy[k] + kinetic[k]:.8f}",
                    f"{conserved[k]:.8f}",
                    *(deviation[k] if deviation else []),
                ]
            )

    def flush(self) -> None:
        """Push buffered rows to disk (before a restart file claims them)."""
        self.thermo_file.flush()

    def close(self, result: MDResult) -> None:
        if self.trajectories is not None:
            self.trajectories.close()
        self.thermo_file.close()
        (self.output_dir / "collapses.json").write_text(json.dumps([asdict(c) for c in result.collapses], indent=2) + "\n")
        if self.committee:
            (self.output_dir / "uncertain.json").write_text(json.dumps([asdict(c) for c in result.flags], indent=2) + "\n")


class _TrajectoryPool:
    """One ASE trajectory per replica with at most :data:`MAX_OPEN_TRAJECTORIES` files open at once.

    A process may hold only so many open files (often 1024), and a run of 10^5 replicas needs a
    trajectory each: the least recently written one is closed and reopened in append mode when its
    replica writes again, which gives the same bytes as a file kept open.
    """

    def __init__(self, paths: list[Path], mode: str) -> None:
        self.paths = paths
        self.open: OrderedDict[int, Trajectory] = OrderedDict()
        for rid, path in enumerate(paths):
            trajectory = Trajectory(path, mode)
            if rid < MAX_OPEN_TRAJECTORIES:
                self.open[rid] = trajectory
            else:
                trajectory.close()

    def write(self, rid: int, atoms: Atoms) -> None:
        trajectory = self.open.pop(rid, None) or Trajectory(self.paths[rid], "a")
        self.open[rid] = trajectory
        trajectory.write(atoms)
        if len(self.open) > MAX_OPEN_TRAJECTORIES:
            self.open.popitem(last=False)[1].close()

    def close(self) -> None:
        for trajectory in self.open.values():
            trajectory.close()
        self.open.clear()


def _first_frames(path: Path, count: int, traj_format: str) -> list[Atoms]:
    """The first ``count`` frames of a trajectory, parsed lazily (a torn tail is never read)."""
    if count == 0 or not path.exists() or not path.stat().st_size:
        return []
    frames = ase.io.iread(path, index=f":{count}", format="traj" if traj_format == "traj" else "extxyz")
    return list(itertools.islice(frames, count))


def _split_forces(state: MDState) -> list:
    return torch.split(state.forces.detach().cpu().double(), state.atoms_per_replica.tolist())


def _single_point(atoms: Atoms, energy: float, forces: torch.Tensor):
    from ase.calculators.singlepoint import SinglePointCalculator

    return SinglePointCalculator(atoms, energy=energy, forces=forces.numpy())


def _make_step(settings: MDSettings, kT: float, generator: torch.Generator):
    """The integrator for ``settings`` as ``step(state, model)``; ``generator`` feeds Langevin noise."""
    dt = settings.timestep_fs * units.fs
    if settings.thermostat == "nve":
        return lambda state, model: integrators.velocity_verlet_step(state, model, dt)
    if settings.thermostat == "langevin":
        friction, noise = settings.friction / units.fs, integrators.HostNoise(generator)
        body = lambda state, model: integrators.langevin_baoab_step(state, model, dt, kT, friction, noise=noise.current(state))
        return HostThenDevice(noise.draw, body)
    return lambda state, model: integrators.nose_hoover_chain_step(state, model, dt, kT)


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
)


def _committee_deviation(committee: Committee, state: MDState) -> torch.Tensor:
    """``[m]`` the committee's largest force deviation per replica, in the force calls MD itself makes."""
    return torch.cat([max_force_deviation(committee, batch) for batch in state.force_batches()])


def run_signature(starts: Sequence[Atoms], settings: MDSettings, dtype: torch.dtype) -> dict:
    """The replicas' compositions, the model's precision and the protocol settings that a resumed run may not change."""
    return {
        "replicas": [a.get_chemical_formula() + ":" + "".join(a.get_chemical_symbols()) for a in starts],
        "dtype": str(dtype).removeprefix("torch."),
        **{name: getattr(settings, name) for name in RESUME_FIXED_SETTINGS},
    }


def _check_same_run(saved: dict | None, now: dict, path: Path) -> None:
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


def _save_restart(
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


def _load_restart(
    path: Path, result: MDResult, monitor: CollapseMonitor, generator: torch.Generator, device, signature: dict
) -> tuple[MDState, int, bool]:
    """The saved state, its step, and whether that run had finished (then ``result`` gets its rate)."""
    from remul_ff.models.files import load_file

    payload = load_file(path, RESTART_KIND)
    _check_same_run(payload.get("run"), signature, path)
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


def prepare_state(model: nn.Module, starts: Sequence[Atoms], settings: MDSettings, device, dtype) -> MDState:
    """Initial state: positions from ``starts``, Maxwell–Boltzmann momenta, forces and thermostat."""
    state = state_from_atoms(starts, device, dtype)
    if settings.initial_velocities:
        maxwell_boltzmann(state, settings.temperature, settings.seed)
    if settings.thermostat == "nose-hoover":
        tdamp = (settings.tdamp_fs or 100 * settings.timestep_fs) * units.fs
        integrators.init_nose_hoover_chain(state, integrators.kT_of(settings.temperature), tdamp, settings.tchain)
    if settings.thermostat == "langevin":
        integrators.init_langevin(state)
    return compute_forces(state, model)


def run_md(
    model: nn.Module | str | os.PathLike,
    starts: Sequence[Atoms] | Atoms,
    settings: MDSettings | dict | None = None,
    output_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    reference_frames: Sequence[Atoms] = (),
    overwrite: bool = False,
) -> MDResult:
    """Integrate one replica per structure in ``starts`` as a single batch.

    Args:
        model: Energy-only model (its device and dtype are used), or the path of a ``model.pt``
            (loaded on the CPU in float64).
        starts: Starting structures, one per replica (they may differ in size and composition), or
            one ``Atoms`` for a single replica.
        settings: The protocol: an :class:`MDSettings`, a dict of its fields, or ``None`` for the defaults.
        output_dir: Where trajectories and thermo go (``None`` writes nothing).
        progress: Show a progress bar with simulated ps and ns/day.
        resume: Continue from ``output_dir/restart.pt`` when it exists (same ``starts`` and settings).
        reference_frames: Data-set frames whose mean bond lengths are the collapse monitor's
            reference (Fu et al. 2023); replicas of molecules not among them use their starting frame.
        overwrite: Replace an earlier run's files in ``output_dir`` (without it, or ``resume``,
            an ``output_dir`` that holds a run is an error).
    """
    settings = md_settings(settings)
    model = load_model(model) if isinstance(model, (str, os.PathLike)) else model
    starts = checked_starts(model, starts)
    warn_long_timestep(settings.timestep_fs, starts)
    if output_dir is not None:
        prepare_output_dir(Path(output_dir), resume, overwrite)
    keep_freed_memory()  # each step frees and allocates the same buffers: reuse them without page faults
    model = inference_model(model)  # the transformer's merged copy: same energies, fewer operations
    if next(model.parameters()).device.type != "cpu":  # no host-device sync per step
        model = with_fixed_pairs(model, max(len(atoms) for atoms in starts))
    run = _start_run(model, starts, settings, None if output_dir is None else Path(output_dir), resume, reference_frames)
    if settings.compile and run.last < settings.n_steps:
        # dynamic: the edge count changes between steps; recompiling for each count would cost more than it saves
        model = torch.compile(model, dynamic=True)
    if not run.last:
        _record(run.writers, run.state, 0, settings, run.kT)
    _integrate(run, model, settings, progress)
    return run.result


def md_settings(settings: MDSettings | dict | None) -> MDSettings:
    """``settings`` as validated :class:`MDSettings` (a dict gives its fields; ``None``: the defaults)."""
    if settings is None:
        settings = MDSettings()
    elif isinstance(settings, dict):
        reject_unknown(list(settings), [f.name for f in dataclasses.fields(MDSettings)], "")
        settings = MDSettings(**settings)
    elif not isinstance(settings, MDSettings):
        raise RemulError(f"run_md's settings must be an MDSettings, a dict of its fields or None, not {type(settings).__name__}.")
    settings.validate()
    return settings


def _atoms_list(starts) -> list[Atoms]:
    """``starts`` (one ``Atoms`` or any iterable of them) as a list; anything else is one sentence."""
    if isinstance(starts, Atoms):
        return [starts]
    others = [starts] if isinstance(starts, (str, bytes, os.PathLike)) or not isinstance(starts, Iterable) else list(starts)
    strangers = [s for s in others if not isinstance(s, Atoms)]
    if strangers:
        raise DataError(
            f"run_md starts from ase.Atoms (one, or a list of them), not {type(strangers[0]).__name__}; "
            "read a structure file with ase.io.read(path, ':')."
        )
    return others


def checked_starts(model: nn.Module, starts: Sequence[Atoms] | Atoms) -> list[Atoms]:
    """``starts`` as a list, each checked (:func:`~remul_ff.data.batch.check_molecule`) and its elements
    known to ``model``: one sentence now instead of an indexing error in the first force call."""
    starts = _atoms_list(starts)
    if not starts:
        raise DataError("run_md got no starting structures; give at least one Atoms.")
    for k, atoms in enumerate(starts):
        check_molecule(atoms, f"the starting structure of replica {k}")
    elements = getattr(model, "elements", None)  # a model's, or a committee's first member's
    if elements is not None:
        elements.check(torch.as_tensor(np.concatenate([atoms.numbers for atoms in starts])))
    return starts


def warn_long_timestep(timestep_fs: float, starts: Sequence[Atoms]) -> None:
    """Warn when the time step is too long for the hydrogen vibrations of ``starts``: a collapse would then
    measure the integrator, not the potential."""
    if timestep_fs > LONGEST_TIMESTEP_WITH_H_FS and any((atoms.numbers == 1).any() for atoms in starts):
        warnings.warn(
            f"remul-ff: a time step of {timestep_fs:g} fs is long for molecules with hydrogen (X-H bonds vibrate "
            f"with a period of ~11 fs; use at most {LONGEST_TIMESTEP_WITH_H_FS:g} fs): collapses at this step may "
            "come from the integrator, not from the model.",
            stacklevel=3,
        )


@dataclass
class _Run:
    """What one MD run carries from step to step (state, collapse monitor, files, random stream)."""

    state: MDState
    monitor: CollapseMonitor
    result: MDResult
    generator: torch.Generator
    kT: float
    signature: dict
    restart: Path | None
    writers: _Writers | None
    committee: Committee | None
    last: int  # the last step done (a finished run: n_steps)


def _start_run(
    model: nn.Module,
    starts: Sequence[Atoms],
    settings: MDSettings,
    output_dir: Path | None,
    resume: bool,
    reference_frames: Sequence[Atoms],
) -> _Run:
    """The run at step 0, or where ``output_dir``'s restart file left it when resuming."""
    parameter = next(model.parameters())
    state = prepare_state(model, starts, settings, parameter.device, parameter.dtype)
    max_t = settings.max_temperature or default_max_temperature(settings.temperature)
    monitor = CollapseMonitor(state, max_t, settings.bond_tolerance, reference_frames)
    result = MDResult(len(starts), settings.n_steps, settings.timestep_fs, output_dir=None if output_dir is None else str(output_dir))
    generator = torch.Generator().manual_seed(settings.seed + 1)
    restart = None if output_dir is None else output_dir / RESTART_FILE
    first, finished = 0, False
    signature = run_signature(starts, settings, parameter.dtype)
    if resume and restart is not None and restart.exists():
        state, first, finished = _load_restart(restart, result, monitor, generator, parameter.device, signature)
    committee = model if isinstance(model, Committee) else None
    if committee is not None and state.force_deviation is None:
        state.force_deviation = _committee_deviation(committee, state)
    writers = None if output_dir is None else _Writers(output_dir, settings, len(starts), first or None, committee is not None)
    # a finished run (all steps, or every replica collapsed) is not re-run
    return _Run(
        state,
        monitor,
        result,
        generator,
        integrators.kT_of(settings.temperature),
        signature,
        restart,
        writers,
        committee,
        settings.n_steps if finished else first,
    )


def _integrate(run: _Run, model: nn.Module, settings: MDSettings, progress: bool) -> None:
    """Step from ``run.last`` to the end (or until every replica has collapsed), writing as asked."""
    step_fn = _make_step(settings, run.kT, run.generator)
    if settings.cuda_graph and graphable(model, run.state.positions.device):
        step_fn = StepGraph(step_fn)  # one launch per step; the step reads nothing back from the device
    start, replica_steps = time.perf_counter(), 0
    checkpoints = run.restart is not None and bool(settings.restart_every)  # restart files are written
    bar = progress_bar(total=round(settings.n_steps * settings.timestep_fs / 1e3, 6), unit="ps", disable=not progress, desc="MD")
    try:
        for step in range(run.last + 1, settings.n_steps + 1):
            step_fn(run.state, model)
            replica_steps += run.state.n_replicas
            if step % settings.check_interval == 0 or step == settings.n_steps:
                run.state = _drop_collapsed(run.state, run.monitor, run.committee, step, settings, run.result)
                if run.state.n_replicas == 0:
                    break
            _record(run.writers, run.state, step, settings, run.kT)
            if checkpoints and step % settings.restart_every == 0:
                _checkpoint(run, step)
            _update_bar(bar, step, settings, start)
            run.last = step
        if checkpoints and replica_steps:  # mark it finished, for re-runs
            rate = replica_steps / max(time.perf_counter() - start, 1e-12)
            _checkpoint(run, run.last, finished=True, replica_steps_per_s=rate)
    finally:
        bar.close()
        _close(run, time.perf_counter() - start, replica_steps)


def _checkpoint(run: _Run, step: int, **extra) -> None:
    """Flush the trajectories, then write the restart file that matches them."""
    run.writers.flush()
    _save_restart(run.restart, run.state, step, run.result, run.monitor, run.generator, run.signature, **extra)


def _close(run: _Run, wall_time_s: float, replica_steps: int) -> None:
    """Record the wall time and rate, and close the files (also when the run was interrupted)."""
    run.result.wall_time_s = wall_time_s
    if replica_steps:  # else keep the finished run's own rate (from its restart file)
        run.result.replica_steps_per_s = replica_steps / max(wall_time_s, 1e-12)
    if run.writers is not None:
        run.writers.close(run.result)


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start over an earlier run unless told to; clear it (and stale temporary files) when told."""
    check_output_path(out, "the MD output", folder=True)
    earlier = sorted(p.name for p in [out / "thermo.csv", out / RESTART_FILE] if p.exists())
    if not earlier:  # a run that failed while creating its files leaves only replica files
        earlier = [f"{p.name} and other replica files" for p in [*out.glob("replica_*.traj"), *out.glob("replica_*.xyz")][:1]]
    if earlier and not resume and not overwrite:
        raise RemulError(
            f"{out} already holds an MD run ({', '.join(earlier)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another output folder."
        )
    if overwrite and not resume:
        for path in [
            out / RESTART_FILE,
            out / "thermo.csv",
            out / "collapses.json",
            *out.glob("replica_*.traj"),
            *out.glob("replica_*.xyz"),
        ]:
            path.unlink(missing_ok=True)
    if out.is_dir():
        remove_stale_temporaries(out)


def _drop_collapsed(
    state: MDState, monitor: CollapseMonitor, committee: Committee | None, step: int, settings: MDSettings, result: MDResult
) -> MDState:
    collapsed, events = monitor.check(state, step, step * settings.timestep_fs / 1e3)
    if committee is not None:
        collapsed, events = _check_deviation(state, committee, collapsed, events, step, settings, result)
    if not events:
        return state
    for event in events:
        print(f"replica {event.replica} collapsed at {event.time_ps:.4f} ps (step {event.step}): {event.reason}")
    result.collapses.extend(events)
    state, atom_keep = state.select(~collapsed)
    monitor.drop(atom_keep)
    return state


def _check_deviation(
    state: MDState, committee: Committee, collapsed: torch.Tensor, events: list[Collapse], step: int, settings: MDSettings, result: MDResult
) -> tuple[torch.Tensor, list[Collapse]]:
    """Measure the committee's force deviation; flag, or add to the collapses, replicas above the threshold."""
    state.force_deviation = _committee_deviation(committee, state)
    threshold = settings.max_force_deviation
    over = torch.zeros_like(collapsed) if threshold is None else (state.force_deviation > threshold) & ~collapsed
    if not bool(over.any()):  # one host sync per check, not per step
        return collapsed, events
    time_ps, flagged = step * settings.timestep_fs / 1e3, {f.replica for f in result.flags}
    found = [
        Collapse(rid, step, time_ps, f"committee force deviation {d:.2f} eV/Å above the threshold {threshold:g} eV/Å")
        for rid, d in zip(state.replica_id[over].tolist(), state.force_deviation[over].tolist())
    ]
    if settings.on_deviation == "flag":
        result.flags.extend(f for f in found if f.replica not in flagged)
        return collapsed, events
    return collapsed | over, sorted(events + found, key=lambda c: c.replica)


def _record(writers: _Writers | None, state: MDState, step: int, settings: MDSettings, kT: float) -> None:
    if writers is None:
        return
    if settings.write_interval and step % settings.write_interval == 0:
        writers.frames(state)
    if settings.thermo_interval and step % settings.thermo_interval == 0:
        writers.thermo_rows(state, step, kT)


def _update_bar(bar: tqdm, step: int, settings: MDSettings, start: float) -> None:
    if step % 100 and step != settings.n_steps:
        return
    simulated_ps = step * settings.timestep_fs / 1e3
    bar.n = round(simulated_ps, 6)  # set, not summed: summed float steps print as 0.15000000000000002
    elapsed_days = (time.perf_counter() - start) / 86400
    bar.set_postfix(ns_per_day=f"{simulated_ps / 1e3 / max(elapsed_days, 1e-12):.3g}", refresh=False)
    bar.update(0)  # redraws only when mininterval has passed (every 30 s in a log file)


__all__ = ["MDResult", "MDSettings", "parse_duration_fs", "prepare_state", "run_md"]
