"""MD settings, readable without torch: :class:`MDSettings`, the command line's defaults and durations.

``remul-ff md`` builds its options from :data:`COMMAND_LINE_MD_SETTINGS`, so the command line and the
Python API cannot drift apart; the driver is :mod:`remul_ff.md.engine`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from remul_ff.errors import RemulError
from remul_ff.schema import AT_LEAST_1, NON_NEGATIVE, POSITIVE, bounded, check_fields, one_of

THERMOSTATS = ("nve", "langevin", "nose-hoover")
DEVIATION_ACTIONS = ("flag", "stop")
FORCE_MODES = ("conservative", "direct", "mts")
TIME_UNITS_FS = {"fs": 1.0, "ps": 1e3, "ns": 1e6}
# X-H stretches (~3000 cm^-1) have a period of ~11 fs; velocity Verlet wants 10-20 steps per period,
# so MD of molecules with hydrogen uses 0.5-1 fs (Fu et al.'s stability benchmarks: 0.5 fs).
LONGEST_TIMESTEP_WITH_H_FS = 1.0
POSITIVE_OR_NONE = (lambda v: v is None or (math.isfinite(v) and v > 0), "a positive number")
OFF_OR_MORE = (lambda v: v >= 0, "0 or more (0 turns it off)")


def parse_duration_fs(text: str | float) -> float:
    """``"300ps"``, ``"10 fs"``, ``"1ns"`` or a number (not a string) of fs, in fs.

    A string needs its unit: ``--time 10`` may mean 10 ps to one user and 10 fs to another.
    """
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(fs|ps|ns)?\s*", str(text))
    if match and isinstance(text, str) and match.group(2) is None:
        raise RemulError(f"the duration {text!r} has no unit; write '{text.strip()}ps' or '{text.strip()}fs'.")
    if not match:
        raise RemulError(f"cannot read the duration {text!r}; write it like '300ps', '500 fs' or '1ns'.")
    try:
        value = float(match.group(1))
    except ValueError:
        raise RemulError(f"cannot read the duration {text!r}; write it like '300ps', '500 fs' or '1ns'.") from None
    return value * TIME_UNITS_FS[match.group(2) or "fs"]


def default_max_temperature(temperature: float) -> float:
    """The temperature guard of the collapse monitor: ``max(10 T, 1000 K)``.

    Fu et al. judge MD17 stability by bond lengths alone; this guard only stops runaway heating.
    It sits far above thermal noise because a small molecule's instantaneous temperature
    fluctuates widely: ethanol (27 degrees of freedom) exceeds 3 T with a canonical probability
    of 2.7e-7 per sample, not negligible over the 6e5 steps of a 300 ps run, while 10 T has
    6e-42. A real blow-up passes 10 T within a few steps.
    """
    return max(10.0 * temperature, 1000.0)


@dataclass
class MDSettings:
    """An MD protocol.

    Attributes:
        temperature: Initial and thermostat temperature, K.
        timestep_fs: Time step, fs.
        total_time_fs: Simulated time per replica, fs.
        thermostat: ``nve``, ``langevin`` (BAOAB) or ``nose-hoover`` (chain of ``tchain``).
        friction: Langevin friction, 1/fs.
        tdamp_fs: Nosé–Hoover damping time, fs (default 100 time steps).
        tchain: Nosé–Hoover chain length.
        seed: Seed of the initial velocities and Langevin noise.
        write_interval: Steps between trajectory frames (0 writes none).
        thermo_interval: Steps between thermo rows.
        check_interval: Steps between collapse checks.
        traj_format: ``traj`` or ``extxyz``.
        max_temperature: Collapse above this temperature, K (default :func:`default_max_temperature`).
        bond_tolerance: Collapse when a bond deviates more than this, Å.
        initial_velocities: Draw Maxwell–Boltzmann momenta (otherwise keep the atoms' own).
        restart_every: Steps between restart files (``restart.pt``, written atomically; 0: none).
            ``run_md(..., resume=True)`` continues from the last one exactly, so a long run can
            span several jobs.
        compile: Run the model through ``torch.compile`` (needs a C++ compiler on CPU). It pays
            for small batches, where torch's per-operation cost dominates (``benchmarks/results/md_speed.md``);
            the first step compiles.
        cuda_graph: On a CUDA device, record the whole step (forces included) once as a CUDA graph
            and replay it (:mod:`remul_ff.md.graphs`), for molecules of up to 64 atoms; Langevin's
            noise is still drawn on the CPU, each step, and copied in. Other devices ignore it, and
            so does ``forces: mts`` (the steps of a cycle differ).
        max_force_deviation: With a committee, the largest force deviation (eV/Å) a replica may
            reach at a check before ``on_deviation`` applies (``None``: only log it).
        on_deviation: ``flag`` records the replica in ``uncertain.json`` and goes on; ``stop``
            also removes it from the run (recorded in ``collapses.json`` with the reason).
        forces: ``conservative`` (``-dE/dx``), ``mts`` (multiple time stepping: a model's direct
            forces on inner steps, corrected to the conservative ones every ``mts_k`` steps,
            :func:`~remul_ff.md.integrators.multiple_time_step`) or ``direct`` (direct forces
            only: fastest, but they are no energy's gradient, so energy is not conserved). The
            last two need a model trained with ``model.direct_forces: true``.
        mts_k: Inner steps per multiple-time-step cycle (``forces: mts``).
    """

    temperature: float = bounded(300.0, *NON_NEGATIVE, what="the temperature (K)")
    timestep_fs: float = bounded(0.5, *POSITIVE, what="the time step (fs)")
    total_time_fs: float = bounded(1000.0, *POSITIVE, what="the total time (fs)")
    thermostat: str = one_of(*THERMOSTATS, default="langevin", what="the thermostat")
    friction: float = bounded(0.01, *NON_NEGATIVE, what="the Langevin friction (1/fs)")
    tdamp_fs: float | None = bounded(None, *POSITIVE_OR_NONE, what="the Nose-Hoover damping time (fs)")
    tchain: int = bounded(3, *AT_LEAST_1, what="the Nose-Hoover chain length")
    seed: int = 0
    write_interval: int = bounded(100, *OFF_OR_MORE, what="the write interval (steps)")
    thermo_interval: int = bounded(10, *AT_LEAST_1, what="the thermo interval (steps)")
    check_interval: int = bounded(1, *AT_LEAST_1, what="the collapse check interval (steps)")
    traj_format: str = one_of("traj", "extxyz", what="the trajectory format")
    max_temperature: float | None = bounded(None, *POSITIVE_OR_NONE, what="the temperature guard (K)")
    bond_tolerance: float = bounded(0.5, *POSITIVE, what="the bond tolerance (Å)")
    initial_velocities: bool = True
    restart_every: int = bounded(0, *OFF_OR_MORE, what="the restart interval (steps)")
    compile: bool = False
    cuda_graph: bool = True
    max_force_deviation: float | None = bounded(None, *POSITIVE_OR_NONE, what="the committee force-deviation threshold (eV/Å)")
    on_deviation: str = one_of(*DEVIATION_ACTIONS, what="the action on a large committee deviation")
    forces: str = one_of(*FORCE_MODES, what="the force mode")
    mts_k: int = bounded(
        4, lambda v: float(v).is_integer() and v >= 1, "an integer >= 1", what="the multiple-time-step k (inner steps per cycle)"
    )

    @property
    def n_steps(self) -> int:
        """Steps per replica."""
        return int(round(self.total_time_fs / self.timestep_fs))

    def validate(self) -> None:
        """Raise :class:`RemulError` for settings that cannot run (before any file is written)."""
        check_fields(self, error=RemulError)
        if self.n_steps < 1:
            raise RemulError(
                f"the total time ({self.total_time_fs:g} fs) is shorter than one time step "
                f"({self.timestep_fs:g} fs); give a longer time or a shorter time step."
            )


# ``remul-ff md`` starts from these: a run from the command line is long, so it checks for collapses every
# 10 steps (a tenth of the cost) and writes a restart file every 10000 steps so that --resume works.
COMMAND_LINE_MD_SETTINGS = MDSettings(check_interval=10, restart_every=10000, total_time_fs=10000.0)
