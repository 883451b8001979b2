"""The data contract: one labelled molecule (:class:`Structure`) and a batch of them (:class:`AtomicBatch`).

Every part of remul-ff (readers, neighbour lists, models, losses, calculators, MD) speaks in these
two types. Units are ASE's throughout; readers convert on the way in.

``AtomicBatch`` fields (``n`` = atoms in the batch, ``m`` = molecules in the batch):

============== ================ ========= ===========================================================
field          shape            dtype     meaning and unit
============== ================ ========= ===========================================================
positions      ``[n, 3]``       float     Cartesian coordinates, Å
atomic_numbers ``[n]``          int64     nuclear charge Z of each atom
molecule_index ``[n]``          int64     index of the molecule each atom belongs to, in ``[0, m)``,
                                          non-decreasing (atoms of a molecule are contiguous)
n_molecules    ``int``          --        ``m``; molecules may have different sizes
energy         ``[m]``          float64   total potential energy per molecule, eV (optional); always
                                          float64, since float32 cannot resolve meV on ~10^4 eV
forces         ``[n, 3]``       float     forces on atoms, eV/Å (optional)
cell           ``[m, 3, 3]``    float     lattice vectors as rows, Å (optional)
pbc            ``[m, 3]``       bool      periodicity per lattice direction (optional)
weight         ``[m]``          float64   loss weight per molecule (optional; ``None`` means 1 for all)
energy_weight  ``[m]``          float64   extra factor on each molecule's energy error (optional;
                                          ``None`` means 1; 0: the molecule's forces only)
layout         --               --        what follows from ``molecule_index`` alone (molecule sizes,
                                          largest molecule, optionally every same-molecule pair):
                                          a :class:`~remul_ff.data.neighbors.MoleculeLayout`, made
                                          by :func:`collate` on the host and moved and joined with
                                          the batch (optional; ``None``: found again when needed)
============== ================ ========= ===========================================================

"float" is the batch's dtype (float64 from the readers; ``batch.to(dtype=torch.float32)`` converts).
``molecule_index`` plays the role of torch-sim's ``system_idx``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from remul_ff.data.neighbors import MoleculeLayout
from remul_ff.errors import DataError
from remul_ff.geometry import closest_pair

MIN_INTERATOMIC_DISTANCE = 0.1
"""Two atoms closer than this (Å) mean a broken structure, not chemistry."""


@dataclass
class Structure:
    """One molecule with optional labels, as NumPy arrays in ASE units.

    Attributes:
        positions: ``[n, 3]`` float64 coordinates in Å.
        numbers: ``[n]`` int64 atomic numbers.
        energy: Total energy in eV, or ``None`` when unlabelled.
        forces: ``[n, 3]`` float64 forces in eV/Å, or ``None``.
        cell: ``[3, 3]`` lattice vectors in Å, or ``None``.
        pbc: ``[3]`` periodic flags, or ``None`` (treated as all ``False``).
        weight: Weight of this structure in the training loss (1 for data; less for frames whose
            labels are approximate, such as the off-equilibrium frames of
            :mod:`remul_ff.data.off_equilibrium`).
        energy_weight: Extra factor on this structure's energy error (1 for data; 0 trains on its
            forces alone, for frames whose energy label is less trustworthy than its forces).
    """

    positions: np.ndarray
    numbers: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None
    weight: float = 1.0
    energy_weight: float = 1.0

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        if self.energy is not None:
            self.energy = float(self.energy)

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def is_periodic(self) -> bool:
        """Whether any lattice direction is periodic."""
        return self.pbc is not None and bool(np.any(self.pbc))

    @classmethod
    def from_atoms(cls, atoms: Atoms, energy: float | None = None, forces: np.ndarray | None = None) -> Structure:
        """Build a structure from ASE ``Atoms`` and explicit labels (labels are not read from ``atoms``)."""
        cell = np.array(atoms.cell[:], dtype=np.float64) if atoms.cell.rank > 0 else None
        return cls(atoms.get_positions(), atoms.get_atomic_numbers(), energy, forces, cell, np.array(atoms.pbc))

    def to_atoms(self) -> Atoms:
        """Return ASE ``Atoms``; labels, when present, are attached as a ``SinglePointCalculator``."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        if self.weight != 1.0:
            atoms.info["weight"] = self.weight
        if self.energy_weight != 1.0:
            atoms.info["energy_weight"] = self.energy_weight
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def validate(self, where: str = "structure") -> None:
        """Raise :class:`DataError` for a frame without atoms, non-finite values or atoms closer than 0.1 Å.

        Args:
            where: Human-readable location used in the message, e.g. ``"frame 3 of data.xyz"``.
        """
        if not len(self.numbers):
            raise DataError(f"{where} has no atoms; remove that frame.")
        if not np.all(np.isfinite(self.positions)):
            raise DataError(f"{where} has NaN or infinite positions; remove or fix that frame.")
        if self.energy is not None and not np.isfinite(self.energy):
            raise DataError(f"{where} has a NaN or infinite energy; remove or fix that frame.")
        if self.forces is not None and not np.all(np.isfinite(self.forces)):
            raise DataError(f"{where} has NaN or infinite forces; remove or fix that frame.")
        self.check_min_distance(where)

    def check_min_distance(self, where: str = "the structure") -> None:
        """Raise :class:`DataError` naming the closest pair when two atoms are nearer than 0.1 Å."""
        if len(self) < 2:
            return
        i, j, distance = closest_pair(self.positions, MIN_INTERATOMIC_DISTANCE)
        if distance < MIN_INTERATOMIC_DISTANCE:
            raise DataError(
                f"{where} has atoms {i} ({chemical_symbols[self.numbers[i]]}) and {j} ({chemical_symbols[self.numbers[j]]}) "
                f"only {distance:.3g} Å apart (less than {MIN_INTERATOMIC_DISTANCE} Å); the geometry is broken, fix or remove it."
            )


def check_molecule(atoms: Atoms, where: str = "the structure") -> None:
    """Raise :class:`DataError` for a structure that no remul-ff model can take: no atoms, a periodic
    cell, NaN or infinite positions (the calculator and the MD engine call it on their inputs)."""
    if not len(atoms):
        raise DataError(f"{where} has no atoms; give it at least one atom.")
    if atoms.pbc.any():
        raise DataError(
            f"{where} is periodic (pbc={atoms.pbc.tolist()}), which remul-ff does not support yet; "
            'for a molecule in a dummy box set atoms.pbc = False (pbc="F F F" in extxyz).'
        )
    if not np.all(np.isfinite(atoms.positions)):
        raise DataError(f"{where} has NaN or infinite positions; the simulation has probably blown up.")


def _optional_tensor(values: list | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if values is None else torch.as_tensor(np.asarray(values), dtype=dtype)


@dataclass
class AtomicBatch:
    """A batch of molecules with per-atom and per-molecule tensors; see the module docstring for units."""

    positions: torch.Tensor
    atomic_numbers: torch.Tensor
    molecule_index: torch.Tensor
    n_molecules: int
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    cell: torch.Tensor | None = None
    pbc: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    energy_weight: torch.Tensor | None = None
    layout: MoleculeLayout | None = None

    @property
    def n_atoms(self) -> int:
        """Number of atoms in the whole batch."""
        return int(self.atomic_numbers.shape[0])

    @property
    def atoms_per_molecule(self) -> torch.Tensor:
        """``[m]`` number of atoms in each molecule (from the layout, so no device read when it is known)."""
        if self.layout is not None:
            return self.layout.sizes
        return torch.bincount(self.molecule_index, minlength=self.n_molecules)

    @property
    def device(self) -> torch.device:
        """Device of the batch's tensors."""
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the batch."""
        return self.positions.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, non_blocking: bool = False) -> AtomicBatch:
        """Return a copy on ``device`` with floating tensors cast to ``dtype`` (integer tensors keep theirs).

        ``non_blocking``: copy from pinned memory without waiting (see :meth:`pin_memory`).
        """

        def move(name: str) -> torch.Tensor | None:
            t = getattr(self, name)
            if t is None:
                return None
            keep_dtype = not t.is_floating_point() or name in ("energy", "weight", "energy_weight")
            return t.to(device=device, dtype=None if keep_dtype else dtype, non_blocking=non_blocking)

        moved = {name: move(name) for name in self._tensor_fields()}
        layout = None if self.layout is None else self.layout.to(device or self.device, non_blocking)
        return dataclasses.replace(self, **moved, layout=layout)

    def _tensor_fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.name not in ("n_molecules", "layout")]

    def pin_memory(self) -> AtomicBatch:
        """A copy in page-locked host memory, from which a CUDA copy need not wait (needs CUDA)."""
        tensors = {name: getattr(self, name) for name in self._tensor_fields()}
        return dataclasses.replace(self, **{k: None if t is None else t.pin_memory() for k, t in tensors.items()})

    def replace(self, **changes: object) -> AtomicBatch:
        """Return a copy with some fields replaced (e.g. rotated positions); a new ``molecule_index``
        without a new ``layout`` drops the old layout, which described the old index."""
        if "molecule_index" in changes and "layout" not in changes:
            changes["layout"] = None
        return dataclasses.replace(self, **changes)

    def split(self) -> list[Structure]:
        """Undo :func:`collate`: one :class:`Structure` per molecule, on the CPU in float64."""
        batch = self.to("cpu", torch.float64)
        bounds = np.concatenate([[0], np.cumsum(batch.atoms_per_molecule.numpy())])
        structures = []
        for m in range(self.n_molecules):
            a, b = bounds[m], bounds[m + 1]
            structures.append(
                Structure(
                    batch.positions[a:b].numpy(),
                    batch.atomic_numbers[a:b].numpy(),
                    None if batch.energy is None else float(batch.energy[m]),
                    None if batch.forces is None else batch.forces[a:b].numpy(),
                    None if batch.cell is None else batch.cell[m].numpy(),
                    None if batch.pbc is None else batch.pbc[m].numpy(),
                    1.0 if batch.weight is None else float(batch.weight[m]),
                    1.0 if batch.energy_weight is None else float(batch.energy_weight[m]),
                )
            )
        return structures


def concat_batches(first: AtomicBatch, second: AtomicBatch) -> AtomicBatch:
    """One batch holding the molecules of ``first`` followed by those of ``second``.

    Optional fields are kept only when both batches have them; the layouts are joined, with no device reads.
    """

    def join(name: str) -> torch.Tensor | None:
        a, b = getattr(first, name), getattr(second, name)
        return None if a is None or b is None else torch.cat([a, b])

    molecule_index = torch.cat([first.molecule_index, second.molecule_index + first.n_molecules])
    both_laid_out = first.layout is not None and second.layout is not None
    return AtomicBatch(
        positions=torch.cat([first.positions, second.positions]),
        atomic_numbers=torch.cat([first.atomic_numbers, second.atomic_numbers]),
        molecule_index=molecule_index,
        n_molecules=first.n_molecules + second.n_molecules,
        energy=join("energy"),
        forces=join("forces"),
        cell=join("cell"),
        pbc=join("pbc"),
        weight=join("weight"),
        energy_weight=join("energy_weight"),
        layout=first.layout.joined(second.layout, first.n_atoms) if both_laid_out else None,
    )


def collate(structures: Sequence[Structure], dtype: torch.dtype = torch.float64, every_pair: bool = False) -> AtomicBatch:
    """Concatenate molecules into one :class:`AtomicBatch` on the CPU, with its layout.

    Labels are kept only when every structure has them, so that a batch never mixes labelled and
    unlabelled molecules silently.

    Args:
        structures: Molecules to batch; at least one.
        dtype: Floating-point dtype of the batch.
        every_pair: Also list every same-molecule pair in the layout (for models that interact over all of them).

    Returns:
        The batch; call ``.to(device)`` to move it.
    """
    if len(structures) == 0:
        raise DataError("cannot build a batch from zero structures; check that the data file is not empty.")
    sizes = [len(s) for s in structures]
    has_energy = all(s.energy is not None for s in structures)
    has_forces = all(s.forces is not None for s in structures)
    has_cell = all(s.cell is not None for s in structures)
    weighted = any(s.weight != 1.0 for s in structures)
    energy_weighted = any(s.energy_weight != 1.0 for s in structures)
    molecule_index = torch.repeat_interleave(torch.arange(len(structures)), torch.as_tensor(sizes))
    return AtomicBatch(
        positions=torch.as_tensor(np.concatenate([s.positions for s in structures]), dtype=dtype),
        atomic_numbers=torch.as_tensor(np.concatenate([s.numbers for s in structures]), dtype=torch.long),
        molecule_index=molecule_index,
        n_molecules=len(structures),
        energy=_optional_tensor([s.energy for s in structures] if has_energy else None, torch.float64),
        forces=_optional_tensor(np.concatenate([s.forces for s in structures]) if has_forces else None, dtype),
        cell=_optional_tensor([s.cell for s in structures] if has_cell else None, dtype),
        pbc=torch.as_tensor(np.array([np.zeros(3, bool) if s.pbc is None else np.asarray(s.pbc, bool) for s in structures])),
        weight=_optional_tensor([s.weight for s in structures] if weighted else None, torch.float64),
        energy_weight=_optional_tensor([s.energy_weight for s in structures] if energy_weighted else None, torch.float64),
        layout=MoleculeLayout.of(molecule_index, len(structures), every_pair),
    )


def device_batch(
    structures: Sequence[Structure], device: torch.device | str, dtype: torch.dtype = torch.float64, every_pair: bool = False
) -> AtomicBatch:
    """:func:`collate` on the host, then move to ``device`` so that the device need not be read back.

    What depends on the molecule sizes (sorted check, largest molecule, atoms per molecule and, with
    ``every_pair``, every same-molecule pair) is found from the host copy of ``molecule_index`` and
    handed to the device copy; on CUDA the tensors go from pinned memory without blocking. A
    training step on a GPU would otherwise wait for the device several times (issue 13).
    """
    host = collate(structures, dtype, every_pair)
    cuda = torch.device(device).type == "cuda"
    return (host.pin_memory() if cuda else host).to(device, non_blocking=cuda)
