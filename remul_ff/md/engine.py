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

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from torch import nn
from tqdm import tqdm

from remul_ff.config import reject_unknown
from remul_ff.data.batch import check_molecule
from remul_ff.errors import DataError, RemulError
from remul_ff.md import integrators
from remul_ff.md.graphs import HostThenDevice, StepGraph, graphable
from remul_ff.md.monitor import Collapse, CollapseMonitor
from remul_ff.md.output import MDResult, Writers, prepare_output_dir
from remul_ff.md.restart import RESTART_FILE, RESTART_KIND, load_restart, run_signature, save_restart  # noqa: F401 (RESTART_KIND re-exported)
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
from remul_ff.models.runtime import ModelSource, ready_model
from remul_ff.models.transformer import has_direct_forces, with_direct_forces
from remul_ff.utils.progress import progress_bar

logger = logging.getLogger(__name__)


def _make_step(settings: MDSettings, kT: float, generator: torch.Generator):
    """The integrator for ``settings`` as ``step(state, model)``; ``generator`` feeds Langevin noise."""
    step = _thermostat_step(settings, kT, generator)
    if settings.forces != "mts":
        return step
    dt = settings.timestep_fs * units.fs
    return lambda state, model: integrators.multiple_time_step(state, model, step, settings.mts_k, dt)


def _thermostat_step(settings: MDSettings, kT: float, generator: torch.Generator):
    """The thermostat's integrator as ``step(state, model)`` (the inner step of multiple time stepping)."""
    dt = settings.timestep_fs * units.fs
    if settings.thermostat == "nve":
        return lambda state, model: integrators.velocity_verlet_step(state, model, dt)
    if settings.thermostat == "langevin":
        friction, noise = settings.friction / units.fs, integrators.HostNoise(generator)
        body = lambda state, model: integrators.langevin_baoab_step(state, model, dt, kT, friction, noise=noise.current(state))
        return HostThenDevice(noise.draw, body)
    return lambda state, model: integrators.nose_hoover_chain_step(state, model, dt, kT)


def _committee_deviation(committee: Committee, state: MDState) -> torch.Tensor:
    """``[m]`` the committee's largest force deviation per replica, in the force calls MD itself makes."""
    return torch.cat([max_force_deviation(committee, batch) for batch in state.force_batches()])


# The force call that starts a run: multiple time stepping needs the slow force from the start.
FIRST_FORCE_MODE = {"conservative": "conservative", "direct": "direct", "mts": "both"}


def prepare_state(model: nn.Module, starts: Sequence[Atoms], settings: MDSettings, device, dtype) -> MDState:
    """Initial state: positions from ``starts``, Maxwell–Boltzmann momenta, forces and thermostat."""
    state = state_from_atoms(starts, device, dtype)
    state.force_mode = FIRST_FORCE_MODE[settings.forces]
    if settings.initial_velocities:
        maxwell_boltzmann(state, settings.temperature, settings.seed)
    if settings.thermostat == "nose-hoover":
        tdamp = (settings.tdamp_fs or 100 * settings.timestep_fs) * units.fs
        integrators.init_nose_hoover_chain(state, integrators.kT_of(settings.temperature), tdamp, settings.tchain)
    if settings.thermostat == "langevin":
        integrators.init_langevin(state)
    return compute_forces(state, model)


def run_md(
    model: nn.Module | ModelSource,
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
        model: Energy-only model (its device and dtype are used), or the path of a ``model.pt``, or a
            list of paths or models for a committee (loaded by :func:`~remul_ff.models.runtime.ready_model`
            on the CPU in float64).
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
    model, starts, settings = _checked_inputs(model, starts, settings)
    if output_dir is not None:
        prepare_output_dir(Path(output_dir), resume, overwrite)
    model = _inference_model(model, starts, settings.forces)
    run = _start_run(model, starts, settings, None if output_dir is None else Path(output_dir), resume, reference_frames)
    if settings.compile and run.last < settings.n_steps:
        model = torch.compile(model, dynamic=True)  # dynamic: the edge count changes between steps
    if not run.last:
        _record(run.writers, run.state, 0, settings, run.kT)
    _integrate(run, model, settings, progress)
    return run.result


def _checked_inputs(model, starts, settings) -> tuple[nn.Module, list[Atoms], MDSettings]:
    """``run_md``'s model (loaded from a path), starting structures and settings, checked (one sentence each)."""
    settings = md_settings(settings)
    model = model if isinstance(model, nn.Module) else ready_model(model)
    starts = checked_starts(model, starts)
    warn_long_timestep(settings.timestep_fs, starts)
    check_force_mode(model, settings.forces)
    return model, starts, settings


def _inference_model(model: nn.Module, starts: Sequence[Atoms], forces: str = "conservative") -> nn.Module:
    """The transformer's merged copy (same energies, fewer operations); off the CPU, over fixed pairs (no host
    sync per step); returning its direct forces too when ``forces`` uses them."""
    model = inference_model(model)
    if next(model.parameters()).device.type != "cpu":
        model = with_fixed_pairs(model, max(len(atoms) for atoms in starts))
    return model if forces == "conservative" else with_direct_forces(model)


def check_force_mode(model: nn.Module, forces: str) -> None:
    """Refuse direct forces for a model without a direct-force head (one sentence); warn that ``direct`` drifts."""
    if forces == "conservative":
        return
    if isinstance(model, Committee) or not has_direct_forces(model):
        raise RemulError(
            f"forces={forces!r} needs one model trained with model.direct_forces: true "
            f"({'a committee has none' if isinstance(model, Committee) else 'this one has no direct-force head'}); "
            "use forces='conservative', or train such a model."
        )
    if forces == "direct":
        warnings.warn(
            "remul-ff: MD on direct forces alone does not conserve energy (they are no energy's gradient); "
            "forces='mts' is as fast on most steps and conserves it.",
            stacklevel=3,
        )


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
    writers: Writers | None
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
        state, first, finished = load_restart(restart, result, monitor, generator, parameter.device, signature)
    committee = model if isinstance(model, Committee) else None
    if committee is not None and state.force_deviation is None:
        state.force_deviation = _committee_deviation(committee, state)
    writers = None if output_dir is None else Writers(output_dir, settings, len(starts), first or None, committee is not None)
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
    if settings.cuda_graph and settings.forces != "mts" and graphable(model, run.state.positions.device):
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
    save_restart(run.restart, run.state, step, run.result, run.monitor, run.generator, run.signature, **extra)


def _close(run: _Run, wall_time_s: float, replica_steps: int) -> None:
    """Record the wall time and rate, and close the files (also when the run was interrupted)."""
    run.result.wall_time_s = wall_time_s
    if replica_steps:  # else keep the finished run's own rate (from its restart file)
        run.result.replica_steps_per_s = replica_steps / max(wall_time_s, 1e-12)
    if run.writers is not None:
        run.writers.close(run.result)


def _drop_collapsed(
    state: MDState, monitor: CollapseMonitor, committee: Committee | None, step: int, settings: MDSettings, result: MDResult
) -> MDState:
    collapsed, events = monitor.check(state, step, step * settings.timestep_fs / 1e3)
    if committee is not None:
        collapsed, events = _check_deviation(state, committee, collapsed, events, step, settings, result)
    if not events:
        return state
    for event in events:
        logger.info(f"replica {event.replica} collapsed at {event.time_ps:.4f} ps (step {event.step}): {event.reason}")
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


def _record(writers: Writers | None, state: MDState, step: int, settings: MDSettings, kT: float) -> None:
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
