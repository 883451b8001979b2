"""Integrators as plain functions ``step(state, model, dt, ...) -> state`` over a batch of replicas.

``dt`` is in ASE time units (``timestep_fs * ase.units.fs``) and ``kT`` in eV. Each step calls the
model exactly once, for all replicas together.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import units
from torch import nn

from remul_ff.md.state import MDState, compute_forces


def _kick(state: MDState, dt: float) -> None:
    state.momenta = state.momenta + dt * state.forces


def _drift(state: MDState, dt: float) -> None:
    state.positions = state.positions + dt * state.momenta / state.masses[:, None]


def velocity_verlet_step(state: MDState, model: nn.Module, dt: float) -> MDState:
    """NVE velocity Verlet, the same update as ``ase.md.VelocityVerlet``."""
    _kick(state, dt / 2)
    _drift(state, dt)
    compute_forces(state, model)
    _kick(state, dt / 2)
    return state


def langevin_baoab_step(
    state: MDState,
    model: nn.Module,
    dt: float,
    kT: float,
    friction: float,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> MDState:
    """Langevin NVT with the BAOAB splitting (Leimkuhler & Matthews 2013).

    Args:
        friction: Friction coefficient in 1/t (ASE time units).
        generator: CPU generator for the noise, so a seed reproduces runs on any device.
        noise: This step's ``[n, 3]`` standard normal noise, already drawn (:class:`HostNoise`);
            then ``generator`` is not used.

    The heat exchanged with the bath in the O step is accumulated in
    ``state.thermostat["heat"]`` so that ``E_tot - heat`` is a conserved quantity.
    """
    _kick(state, dt / 2)
    _drift(state, dt / 2)
    c1 = math.exp(-friction * dt)
    if noise is None:
        noise = standard_noise(state, generator).to(state.momenta)
    before = state.kinetic_energy()
    state.momenta = c1 * state.momenta + math.sqrt((1 - c1**2) * kT) * torch.sqrt(state.masses)[:, None] * noise
    state.thermostat["heat"] = state.thermostat.get("heat", torch.zeros_like(before)) + state.kinetic_energy() - before
    _drift(state, dt / 2)
    compute_forces(state, model)
    _kick(state, dt / 2)
    return state


def standard_noise(state: MDState, generator: torch.Generator) -> torch.Tensor:
    """One step's ``[n, 3]`` float64 standard normal noise from the CPU ``generator``."""
    return torch.randn(state.momenta.shape, generator=generator, dtype=torch.float64)


def init_langevin(state: MDState) -> MDState:
    """Start the Langevin bath's heat account at zero (a recorded step needs it from the first step)."""
    state.thermostat["heat"] = torch.zeros(state.n_replicas, dtype=torch.float64, device=state.positions.device)
    return state


class HostNoise:
    """Langevin noise drawn on the host from the run's generator, then copied into one device buffer.

    The numbers are those :func:`langevin_baoab_step` draws itself (the same run on every device),
    and the buffer keeps its memory, so a recorded step (:mod:`remul_ff.md.graphs`) can read it: on
    CUDA the copy goes from pinned memory without blocking.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.buffer: torch.Tensor | None = None

    def draw(self, state: MDState) -> None:
        """Draw this step's noise into :meth:`current`."""
        noise = standard_noise(state, self.generator)
        if self.buffer is None or self.buffer.shape[0] < noise.shape[0] or self.buffer.dtype != state.momenta.dtype:
            self.buffer = torch.empty_like(state.momenta)  # replicas only leave a run: the first size serves
        cuda = self.buffer.device.type == "cuda"
        self.current(state).copy_(noise.pin_memory() if cuda else noise, non_blocking=cuda)

    def current(self, state: MDState) -> torch.Tensor:
        """The drawn noise, ``[n, 3]`` for ``state``."""
        return self.buffer[: state.momenta.shape[0]]


# Suzuki–Yoshida fourth-order weights for the thermostat sub-steps.
_W = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
SUZUKI_YOSHIDA_4 = (_W, 1.0 - 2.0 * _W, _W)


def init_nose_hoover_chain(state: MDState, kT: float, tdamp: float, chain: int = 3) -> MDState:
    """Attach Nosé–Hoover chain variables (positions ``eta``, momenta ``p_eta``, masses ``Q``) per replica.

    ``Q_1 = N_f kT τ²`` and ``Q_k = kT τ²`` with ``N_f = 3N`` degrees of freedom, as in ASE's
    ``NoseHooverChainNVT``; ``tdamp`` (τ) is in ASE time units.
    """
    m, dtype, device = state.n_replicas, torch.float64, state.positions.device
    dof = 3 * state.atoms_per_replica.to(dtype)
    masses = torch.full((m, chain), kT * tdamp**2, dtype=dtype, device=device)
    masses[:, 0] = dof * kT * tdamp**2
    state.thermostat.update(
        eta=torch.zeros(m, chain, dtype=dtype, device=device), p_eta=torch.zeros(m, chain, dtype=dtype, device=device), Q=masses
    )
    return state


def _update_chain_momentum(chain: dict, j: int, two_ke, dof_kT, kT: float, delta: float, xp) -> None:
    p_eta, q = chain["p_eta"], chain["Q"]
    force = two_ke - dof_kT if j == 0 else p_eta[:, j - 1] ** 2 / q[:, j - 1] - kT
    damp = 1.0 if j == p_eta.shape[1] - 1 else xp.exp(-delta / 4 * p_eta[:, j + 1] / q[:, j + 1])
    p_eta[:, j] = (p_eta[:, j] * damp + delta / 2 * force) * damp


def _nose_hoover_chain_substep(chain: dict, two_ke, dof_kT, kT: float, delta: float, xp):
    """One thermostat sub-step on the chain variables (NumPy arrays or tensors, ``xp`` their module);
    returns the momentum scale of each replica."""
    for j in reversed(range(chain["p_eta"].shape[1])):
        _update_chain_momentum(chain, j, two_ke, dof_kT, kT, delta, xp)
    chain["eta"] += delta * chain["p_eta"] / chain["Q"]
    scale = xp.exp(-delta * chain["p_eta"][:, 0] / chain["Q"][:, 0])
    two_ke = two_ke * scale**2
    for j in range(chain["p_eta"].shape[1]):
        _update_chain_momentum(chain, j, two_ke, dof_kT, kT, delta, xp)
    return scale


def _nose_hoover_chain_half(state: MDState, kT: float, delta: float, on_host: bool | None = None) -> None:
    """The thermostat's half step; the momenta are rescaled once, with the product of the sub-step scales.

    ``on_host`` (default: when the tensors are on the CPU) runs the chain in NumPy: it holds a few
    numbers per replica, where torch's per-operation cost dominates over the arithmetic. On an
    accelerator the same arithmetic stays in tensors on the device, so that an MD step needs no
    host-device synchronisation.
    """
    host = state.momenta.device.type == "cpu" if on_host is None else on_host
    xp = np if host else torch
    convert = (lambda t: t.detach().cpu().numpy().copy()) if host else (lambda t: t.clone())
    chain = {k: convert(state.thermostat[k]) for k in ("eta", "p_eta", "Q")}
    two_ke = convert(2 * state.kinetic_energy())
    dof_kT = convert(3 * state.atoms_per_replica.double() * kT)
    total = xp.ones_like(two_ke)
    for weight in SUZUKI_YOSHIDA_4:
        scale = _nose_hoover_chain_substep(chain, two_ke, dof_kT, kT, weight * delta, xp)
        two_ke, total = two_ke * scale**2, total * scale
    device = state.momenta.device
    back = (lambda a: torch.from_numpy(a).to(device)) if host else (lambda t: t)
    state.thermostat.update({k: back(v) for k, v in chain.items()})
    state.momenta = state.momenta * back(total).to(state.momenta.dtype)[state.molecule_index, None]


def multiple_time_step(state: MDState, model: nn.Module, inner, k: int, dt: float) -> MDState:
    """One inner step of multiple time stepping (r-RESPA; Tuckerman, Berne & Martyna 1992).

    ``inner(state, model)`` is any integrator step above, run on the direct forces (cheap: no
    autograd). A cycle of ``k`` inner steps is wrapped in two half kicks of the slow force
    ``conservative - direct`` over ``k dt / 2``; the last inner step of a cycle computes both forces
    from one forward pass and a backward pass. The trajectory then follows the conservative
    forces over a cycle (the same energy is conserved as by velocity Verlet, up to the error the
    slow force's long step adds), while ``k - 1`` of every ``k`` force calls skip the backward pass.
    ``k = 1`` is ``inner`` on the conservative forces.

    Args:
        state: Replicas; ``state.slow_forces`` must hold the slow force at the current positions
            (:func:`~remul_ff.md.state.compute_forces` with ``force_mode="both"``).
        inner: The inner integrator step.
        k: Inner steps per cycle.
        dt: The inner time step (ASE time units).
    """
    if state.mts_phase == 0:
        state.momenta = state.momenta + (k * dt / 2) * state.slow_forces
    closing = state.mts_phase == k - 1
    state.force_mode = "both" if closing else "direct"
    inner(state, model)
    if closing:
        state.momenta = state.momenta + (k * dt / 2) * state.slow_forces
    state.mts_phase = (state.mts_phase + 1) % k
    return state


def nose_hoover_chain_step(state: MDState, model: nn.Module, dt: float, kT: float, on_host: bool | None = None) -> MDState:
    """Nosé–Hoover-chain NVT (Martyna, Tuckerman & Klein 1996): thermostat half step, velocity
    Verlet, thermostat half step. Call :func:`init_nose_hoover_chain` first.

    ``on_host``: where the chain's arithmetic runs (default: NumPy for CPU tensors, the device otherwise).
    """
    _nose_hoover_chain_half(state, kT, dt / 2, on_host)
    velocity_verlet_step(state, model, dt)
    _nose_hoover_chain_half(state, kT, dt / 2, on_host)
    return state


def conserved_energy(state: MDState, kT: float = 0.0) -> torch.Tensor:
    """``[m]`` the integrator's conserved quantity: total energy, minus Langevin heat, plus the
    Nosé–Hoover chain's energy."""
    total = state.energy + state.kinetic_energy()
    if "heat" in state.thermostat:
        total = total - state.thermostat["heat"]
    if "p_eta" in state.thermostat:
        eta, p_eta, q = state.thermostat["eta"], state.thermostat["p_eta"], state.thermostat["Q"]
        dof = 3 * state.atoms_per_replica.double()
        total = total + dof * kT * eta[:, 0] + kT * eta[:, 1:].sum(-1) + (p_eta**2 / (2 * q)).sum(-1)
    return total


def kT_of(temperature: float) -> float:
    """``k_B T`` in eV."""
    return units.kB * temperature


__all__ = [
    "HostNoise",
    "conserved_energy",
    "init_langevin",
    "init_nose_hoover_chain",
    "kT_of",
    "langevin_baoab_step",
    "multiple_time_step",
    "nose_hoover_chain_step",
    "velocity_verlet_step",
]
