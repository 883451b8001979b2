"""Per-element reference energies (E0s), subtracted so that models learn only the interaction energy."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from remul_ff.data.batch import Structure
from remul_ff.errors import DataError


def composition_matrix(structures: Sequence[Structure], elements: Sequence[int]) -> np.ndarray:
    """``[n_structures, n_elements]`` count of each element in each structure."""
    column = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    for row, s in enumerate(structures):
        for z, c in zip(*np.unique(s.numbers, return_counts=True)):
            counts[row, column[int(z)]] = c
    return counts


def fit_e0s_average(structures: Sequence[Structure]) -> dict[int, float]:
    """Least-squares E0s: the per-element energies that best explain the total energies by composition.

    With a single molecule type the system is rank deficient; ``lstsq`` then returns the
    minimum-norm solution, which still reproduces the mean energy exactly.
    """
    labelled = [s for s in structures if s.energy is not None]
    if not labelled:
        raise DataError("cannot fit E0s: no structure has an energy label.")
    elements = sorted({int(z) for s in labelled for z in s.numbers})
    counts = composition_matrix(labelled, elements)
    energies = np.array([s.energy for s in labelled])
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {z: float(e) for z, e in zip(elements, solution)}


def e0s_from_isolated(structures: Sequence[Structure]) -> dict[int, float]:
    """E0s from single-atom structures (one frame per element)."""
    e0s = {int(s.numbers[0]): float(s.energy) for s in structures if len(s) == 1 and s.energy is not None}
    if not e0s:
        raise DataError("no single-atom frame with an energy was found, so isolated-atom E0s cannot be read.")
    return e0s


def _parse_mapping(spec: Mapping) -> dict[int, float]:
    e0s = {}
    for key, value in spec.items():
        z = atomic_numbers.get(key) if isinstance(key, str) and not key.isdigit() else int(key)
        if z is None:
            raise DataError(f"unknown element {key!r} in the E0 mapping; use chemical symbols such as 'H' or numbers.")
        e0s[z] = float(value)
    return e0s


def resolve_e0s(spec: str | Mapping | None, train: Sequence[Structure], all_frames: Sequence[Structure] = ()) -> dict[int, float]:
    """Turn an E0 specification into ``{Z: energy_eV}``.

    Args:
        spec: ``"average"`` (least squares over ``train``), ``"isolated"`` (single-atom frames
            found in ``all_frames``), a path to a file of isolated atoms, a mapping from element
            symbol or number to eV, or ``None``/``"zero"`` for no reference energies.
        train: Training structures, used by ``"average"`` and to check element coverage.
        all_frames: Every frame of the data file, searched by ``"isolated"``.

    Returns:
        The E0s; every element of ``train`` is covered.
    """
    from remul_ff.data.readers import read_structures

    if spec is None or spec == "zero":
        e0s = {int(z): 0.0 for s in train for z in s.numbers}
    elif isinstance(spec, Mapping):
        e0s = _parse_mapping(spec)
    elif spec == "average":
        e0s = fit_e0s_average(train)
    elif spec == "isolated":
        e0s = e0s_from_isolated(all_frames)
    elif os.path.isfile(str(spec)):
        e0s = e0s_from_isolated(read_structures(spec, require_forces=False))
    else:
        raise DataError(f"E0 setting {spec!r} is neither 'average', 'isolated', 'zero', a mapping, nor an existing file.")
    missing = sorted({int(z) for s in train for z in s.numbers} - set(e0s))
    if missing:
        names = ", ".join(chemical_symbols[z] for z in missing)
        raise DataError(f"the E0s have no value for {names}; add them to the E0 mapping or file.")
    return e0s


def reference_energy(structure: Structure, e0s: Mapping[int, float]) -> float:
    """Sum of the E0s of a structure's atoms, in eV."""
    return float(sum(e0s[int(z)] for z in structure.numbers))
