"""Multiple time stepping for ASE: cheap direct forces on inner steps, the conservative correction every k-th.

``MultipleTimeStepVerlet(atoms, 0.5 * units.fs, k=4)`` is an ASE dynamics object like
``ase.md.VelocityVerlet``, for a :class:`~remul_ff.integrations.remul.REMULCalculator` whose model
has a direct-force head. It integrates as :func:`remul_ff.md.integrators.multiple_time_step` does
(r-RESPA, NVE): each ``step()`` is one inner step, and every ``k``-th step also computes the
conservative forces, whose difference from the direct ones (the slow force) is applied as a kick of
``k * dt / 2`` before and after each cycle. Observers attached with an interval that is a multiple
of ``k`` see the states at the ends of cycles, where the total energy is the conserved one.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.md.md import MolecularDynamics


class MultipleTimeStepVerlet(MolecularDynamics):
    """NVE multiple time stepping with a remul-ff model's direct and conservative forces.

    Args:
        atoms: The atoms, with a ``REMULCalculator`` of a model trained with ``model.direct_forces: true``.
        timestep: The inner time step, in ASE time units (``0.5 * ase.units.fs``).
        k: Inner steps per cycle (1: velocity Verlet on the conservative forces).
        **kwargs: Passed on to :class:`ase.md.md.MolecularDynamics` (``trajectory``, ``logfile``, ...).
    """

    def __init__(self, atoms: Atoms, timestep: float, k: int = 4, **kwargs) -> None:
        if "direct_forces" not in getattr(atoms.calc, "implemented_properties", ()):
            raise ValueError(
                "MultipleTimeStepVerlet needs a REMULCalculator of one model trained with model.direct_forces: true "
                "(conservative forces only: use ase.md.VelocityVerlet)."
            )
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k (inner steps per cycle) must be an integer >= 1, not {k!r}.")
        super().__init__(atoms, timestep, **kwargs)
        self.k, self.phase = int(k), 0
        self.slow_forces = self._both_forces()[1]

    def _both_forces(self) -> tuple[np.ndarray, np.ndarray]:
        """``(direct forces, conservative - direct)`` at the current positions (one model call, unless compiled)."""
        forces = self.atoms.calc.get_property("forces", self.atoms)
        direct = self._direct_forces()
        return direct, forces - direct

    def _direct_forces(self) -> np.ndarray:
        return self.atoms.calc.get_property("direct_forces", self.atoms)

    def _refresh_properties(self) -> None:
        """What ASE computes after every step for loggers and observers: the direct forces and the energy.

        ASE asks for ``atoms.get_forces()`` here, which on an inner step would be a conservative call
        (forward and backward) every step: MTS no faster than velocity Verlet. The ends of cycles have
        both; an observer that reads ``get_forces()`` on an inner step pays that call itself.
        """
        self._direct_forces()

    def step(self, forces: np.ndarray | None = None) -> np.ndarray:
        """One inner step; returns the direct forces at the new positions."""
        atoms, dt, slow_kick = self.atoms, self.dt, self.k * self.dt / 2
        if forces is None:
            forces = self._direct_forces()
        momenta = atoms.get_momenta()
        if self.phase == 0:
            momenta = momenta + slow_kick * self.slow_forces
        momenta = momenta + dt / 2 * forces
        atoms.set_positions(atoms.positions + dt * momenta / atoms.get_masses()[:, None])
        closing = self.phase == self.k - 1
        if closing:
            forces, self.slow_forces = self._both_forces()
        else:
            forces = self._direct_forces()
        momenta = momenta + dt / 2 * forces
        if closing:
            momenta = momenta + slow_kick * self.slow_forces
        atoms.set_momenta(momenta)
        self.phase = (self.phase + 1) % self.k
        return forces
