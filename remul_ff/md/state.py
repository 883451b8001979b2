"""Batched MD state: many independent replicas (molecules) integrated as one set of tensors.

Units are ASE's: positions Å, momenta amu·Å/t with ``t`` ASE's time unit (``ase.units.fs`` ≈
0.0982 t), masses amu, energies eV. Kinetic energies ``p²/2m`` then come out in eV directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from ase import Atoms, units
from torch import nn

from remul_ff.data.batch import AtomicBatch, Structure, collate
from remul_ff.data.neighbors import BYTES_PER_CANDIDATE_PAIR, MoleculeLayout, available_backends, free_memory_bytes
from remul_ff.models.common import ACCELERATOR_ALL_PAIRS_MAX_ATOMS, scatter_sum
from remul_ff.models.forces import predict


@dataclass
class MDState:
    """Positions and momenta of ``m`` replicas (``n`` atoms in all), plus cached forces.

    Attributes:
        positions: ``[n, 3]`` Å.
        momenta: ``[n, 3]`` amu·Å/t.
        masses: ``[n]`` amu.
        atomic_numbers: ``[n]``.
        molecule_index: ``[n]`` replica of each atom, non-decreasing.
        replica_id: ``[m]`` original number of each replica (replicas that collapse are removed).
        forces: ``[n, 3]`` eV/Å at ``positions``.
        energy: ``[m]`` float64 potential energy, eV.
        thermostat: Integrator-specific per-replica tensors (e.g. Nosé–Hoover chain variables).
        force_deviation: ``[m]`` a committee's largest force deviation per replica at the last
            check, eV/Å (``None`` for a single model).
        force_mode: What :func:`compute_forces` puts in ``forces``: ``conservative`` (``-dE/dx``),
            ``direct`` (a direct-force head's, no autograd) or ``both`` (direct, and the
            conservative minus direct in ``slow_forces``: multiple time stepping's outer step).
        slow_forces: ``[n, 3]`` conservative minus direct forces at the last ``both`` call, eV/Å.
        mts_phase: Inner steps taken in the current multiple-time-step cycle.
    """

    positions: torch.Tensor
    momenta: torch.Tensor
    masses: torch.Tensor
    atomic_numbers: torch.Tensor
    molecule_index: torch.Tensor
    replica_id: torch.Tensor
    forces: torch.Tensor | None = None
    energy: torch.Tensor | None = None
    thermostat: dict[str, torch.Tensor] = field(default_factory=dict)
    force_deviation: torch.Tensor | None = None
    force_mode: str = "conservative"
    slow_forces: torch.Tensor | None = None
    mts_phase: int = 0
    _calls: tuple | None = field(default=None, repr=False)  # (molecule_index, its force-call slices)
    _counts: tuple | None = field(default=None, repr=False)  # (molecule_index, atoms per replica)

    @property
    def n_replicas(self) -> int:
        """Replicas still in the batch."""
        return int(self.replica_id.shape[0])

    @property
    def atoms_per_replica(self) -> torch.Tensor:
        """``[m]`` atom count of each replica.

        Kept while ``molecule_index`` stays the same tensor: ``bincount`` waits for the device to
        size its output, and the thermostat asks every step.
        """
        if self._counts is None or self._counts[0] is not self.molecule_index:
            self._counts = (self.molecule_index, torch.bincount(self.molecule_index, minlength=self.n_replicas))
        return self._counts[1]

    def batch(self) -> AtomicBatch:
        """The positions as a model input batch."""
        return AtomicBatch(self.positions, self.atomic_numbers, self.molecule_index, self.n_replicas)

    def force_batches(self) -> list[AtomicBatch]:
        """The positions as model input batches of whole replicas, sized by :func:`pairs_per_call`.

        Each call's molecule layout (sizes and pairs) is found once per ``molecule_index``, not every step.
        """
        if self._calls is None or self._calls[0] is not self.molecule_index:
            calls = replica_calls(self.molecule_index, self.atoms_per_replica)
            self._calls = (self.molecule_index, [(a, b, index, n, call_layout(index, n)) for a, b, index, n in calls])
        return [
            AtomicBatch(self.positions[a:b], self.atomic_numbers[a:b], index, n, layout=layout) for a, b, index, n, layout in self._calls[1]
        ]

    def kinetic_energy(self) -> torch.Tensor:
        """``[m]`` kinetic energy per replica, eV (float64)."""
        per_atom = (self.momenta.double() ** 2).sum(-1) / (2 * self.masses.double())
        return scatter_sum(per_atom, self.molecule_index, self.n_replicas)

    def temperature(self) -> torch.Tensor:
        """``[m]`` instantaneous temperature in K, with 3N degrees of freedom (as ASE)."""
        return 2 * self.kinetic_energy() / (3 * self.atoms_per_replica * units.kB)

    def select(self, keep: torch.Tensor) -> tuple[MDState, torch.Tensor]:
        """Keep the replicas where ``keep`` (``[m]`` bool) is true; also return the atom mask."""
        atom_keep = keep[self.molecule_index]
        new_index = torch.cumsum(keep.long(), 0) - 1
        per_atom = ("positions", "momenta", "masses", "atomic_numbers", "forces", "slow_forces")
        state = MDState(
            **{name: None if getattr(self, name) is None else getattr(self, name)[atom_keep] for name in per_atom},
            molecule_index=new_index[self.molecule_index[atom_keep]],
            replica_id=self.replica_id[keep],
            energy=None if self.energy is None else self.energy[keep],
            force_deviation=None if self.force_deviation is None else self.force_deviation[keep],
            thermostat={k: v[keep] for k, v in self.thermostat.items()},
            force_mode=self.force_mode,
            mts_phase=self.mts_phase,
        )
        return state, atom_keep

    def replica_atoms(self) -> list[tuple[int, Atoms]]:
        """``(replica_id, Atoms)`` for each replica, with momenta (for writing trajectories)."""
        bounds = torch.cumsum(self.atoms_per_replica, 0).tolist()
        positions, momenta = self.positions.detach().cpu().double().numpy(), self.momenta.detach().cpu().double().numpy()
        numbers = self.atomic_numbers.cpu().numpy()
        out, start = [], 0
        for rid, end in zip(self.replica_id.tolist(), bounds):
            atoms = Atoms(numbers=numbers[start:end], positions=positions[start:end], momenta=momenta[start:end])
            out.append((rid, atoms))
            start = end
        return out


def state_from_atoms(structures: Sequence[Atoms], device: torch.device | str, dtype: torch.dtype) -> MDState:
    """An MD state with one replica per ``Atoms`` (momenta from the atoms, zero when unset).

    Each replica is moved so that its mean position is the origin, in float64 before the cast:
    far from the origin float32 would round the interatomic vectors (1e6 Å away: 0.06 Å steps).
    """
    centred = [Structure(a.positions - a.positions.mean(0), a.numbers) for a in structures]
    batch = collate(centred, dtype=dtype).to(device)
    momenta = torch.cat([torch.as_tensor(a.get_momenta()) for a in structures]).to(device, dtype)
    masses = torch.cat([torch.as_tensor(a.get_masses()) for a in structures]).to(device, dtype)
    return MDState(
        batch.positions, momenta, masses, batch.atomic_numbers, batch.molecule_index, torch.arange(len(structures), device=device)
    )


# On the CPU, a force call over more same-molecule atom pairs than this falls out of the caches:
# 1024 ethanol replicas (74k pairs) in one call gave 1.8x fewer replica-steps/s than four calls of
# 256, and throughput fell from 1154 replica-steps/s at 256 replicas to 635 at 1024
# (benchmarks/results/md_speed.json).
CPU_PAIRS_PER_CALL = 20_000
# GPUs are launch-bound, so they get as few calls as fit: a call may use this share of the memory
# free when the batch is laid out (the rest is headroom for the allocator and compiled kernels).
ACCELERATOR_MEMORY_SHARE = 0.5


def pairs_per_call(device: torch.device) -> int | None:
    """Most same-molecule atom pairs one force call holds on ``device``; ``None``: no limit.

    This is the MD engine's automatic batch size: the CPU's is set by its caches, an
    accelerator's by its free memory (``BYTES_PER_CANDIDATE_PAIR`` per pair), so an ensemble too
    large for one call runs as several instead of being refused.
    """
    if device.type == "cpu":
        return CPU_PAIRS_PER_CALL
    free = free_memory_bytes(device)
    return None if free is None else max(1, int(ACCELERATOR_MEMORY_SHARE * free / BYTES_PER_CANDIDATE_PAIR))


def call_layout(molecule_index: torch.Tensor, n_replicas: int) -> MoleculeLayout:
    """The layout of one force call, with every same-molecule pair where a model may use them as its
    interactions or candidates (molecules up to :data:`ACCELERATOR_ALL_PAIRS_MAX_ATOMS` atoms, or any
    size when the pure-torch radius graph would list them anyway); beyond, the radius graph finds its own."""
    layout = MoleculeLayout.of(molecule_index, n_replicas)
    if layout.largest <= ACCELERATOR_ALL_PAIRS_MAX_ATOMS or "torch_cluster" not in available_backends():
        layout = layout.with_pairs(molecule_index)
    return layout


def replica_calls(
    molecule_index: torch.Tensor, counts: torch.Tensor, pair_budget: int | None = None
) -> list[tuple[int, int, torch.Tensor, int]]:
    """``(first atom, end atom, the call's molecule_index, its replicas)`` per force call.

    ``counts`` (``[m]``) is the atom count of each replica (:attr:`MDState.atoms_per_replica`);
    ``pair_budget`` defaults to :func:`pairs_per_call` for the tensors' device.

    Consecutive replicas are grouped into calls of about ``pair_budget`` ordered atom pairs: a call
    ends after the replica whose running pair count crosses a multiple of it, so it holds at most
    that many pairs plus its last replica's. With no budget all replicas form one call.
    """
    budget = pairs_per_call(molecule_index.device) if pair_budget is None else pair_budget
    if budget is None or counts.numel() == 0:
        return [(0, molecule_index.shape[0], molecule_index, counts.numel())]
    pairs = counts * (counts - 1)
    call_of_replica = (torch.cumsum(pairs, 0) - pairs) // budget
    replica_ends = torch.cumsum(torch.unique_consecutive(call_of_replica, return_counts=True)[1], 0)
    atom_ends = torch.cumsum(counts, 0)[replica_ends - 1]
    calls, atom_start, replica_start = [], 0, 0
    for atom_end, replica_end in zip(atom_ends.tolist(), replica_ends.tolist()):
        calls.append((atom_start, atom_end, molecule_index[atom_start:atom_end] - replica_start, replica_end - replica_start))
        atom_start, replica_start = atom_end, replica_end
    return calls


def compute_forces(state: MDState, model: nn.Module) -> MDState:
    """Evaluate the model on all replicas and cache energies and forces (by ``state.force_mode``) on the state."""
    mode = state.force_mode
    predictions = [predict(model, batch, forces=mode != "direct") for batch in state.force_batches()]
    state.energy = _joined([p.energy for p in predictions])
    if mode == "conservative":
        state.forces = _joined([p.forces for p in predictions])
        return state
    if predictions[0].direct_forces is None:
        raise RuntimeError(f"force_mode {mode!r} needs a model seen through with_direct_forces()")
    state.forces = _joined([p.direct_forces for p in predictions])
    if mode == "both":
        state.slow_forces = _joined([p.forces for p in predictions]) - state.forces
    return state


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def maxwell_boltzmann(state: MDState, temperature: float, seed: int) -> MDState:
    """Draw Maxwell–Boltzmann momenta at ``temperature`` K and remove each replica's centre-of-mass momentum.

    Random numbers are drawn on the CPU so that a seed gives the same velocities on any device.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(state.momenta.shape, generator=generator, dtype=torch.float64)
    momenta = noise.to(state.momenta) * torch.sqrt(state.masses * units.kB * temperature)[:, None]
    total = scatter_sum(momenta, state.molecule_index, state.n_replicas)
    mass = scatter_sum(state.masses, state.molecule_index, state.n_replicas)
    state.momenta = momenta - (total / mass[:, None])[state.molecule_index] * state.masses[:, None]
    return state
