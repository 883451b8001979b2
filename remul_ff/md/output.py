"""What an MD run writes: one trajectory per replica, ``thermo.csv``, ``collapses.json``, and the
output folder's checks (refuse or overwrite an earlier run); the driver is :mod:`remul_ff.md.engine`."""

from __future__ import annotations

import csv
import itertools
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase.io
import torch
from ase import Atoms
from ase.io.trajectory import Trajectory

from remul_ff.errors import RemulError
from remul_ff.md import integrators
from remul_ff.md.analysis import stability_time_ps
from remul_ff.md.monitor import Collapse
from remul_ff.md.restart import RESTART_FILE
from remul_ff.md.settings import MDSettings
from remul_ff.md.state import MDState
from remul_ff.utils.io import atomic_path, check_output_path, remove_stale_temporaries

THERMO_COLUMNS = ["replica", "step", "time_ps", "temperature_K", "e_pot_eV", "e_kin_eV", "e_tot_eV", "conserved_eV"]
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


class Writers:
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
