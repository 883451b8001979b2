"""Readers from DFT data files into :class:`~remul_ff.data.batch.Structure` lists, converting to eV and Å.

Supported:

* anything ``ase.io.read`` reads (extended XYZ, ASE ``.traj``, ...). Energy and forces are taken
  from ``atoms.info`` / ``atoms.arrays`` under configurable keys or, as ASE ≥ 3.23 stores them,
  from the attached ``SinglePointCalculator``;
* MD17 ``.npz`` (keys ``R``, ``z``, ``E``, ``F``; kcal/mol and kcal/mol/Å);
* revised MD17 ``.npz`` (keys ``coords``, ``nuclear_charges``, ``energies``, ``forces``; kcal/mol).
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units

from remul_ff.data.batch import Structure
from remul_ff.errors import DataError

KCAL_PER_MOL = units.kcal / units.mol
"""One kcal/mol in eV."""

NPZ_LAYOUTS: dict[str, dict[str, str]] = {
    "md17": {"positions": "R", "numbers": "z", "energy": "E", "forces": "F"},
    "rmd17": {"positions": "coords", "numbers": "nuclear_charges", "energy": "energies", "forces": "forces"},
}
FORMATS = ("auto", "ase", "md17", "rmd17")


def detect_format(path: str | os.PathLike) -> str:
    """Return ``"md17"``, ``"rmd17"`` or ``"ase"`` by looking inside the file, not only at its name."""
    if not zipfile.is_zipfile(path):
        return "ase"
    try:
        keys = set(np.load(path).files)
    except Exception as exc:
        raise DataError(f"could not open {path} as a NumPy .npz archive ({exc}); the file may be truncated.") from exc
    for name, layout in NPZ_LAYOUTS.items():
        if {layout["positions"], layout["numbers"]} <= keys:
            return name
    raise DataError(
        f"{path} is an .npz archive with keys {sorted(keys)}, which match neither MD17 (R, z, E, F) "
        "nor rMD17 (coords, nuclear_charges, energies, forces)."
    )


def read_structures(
    path: str | os.PathLike,
    format: str = "auto",
    energy_key: str = "energy",
    forces_key: str = "forces",
    index: str | int = ":",
    require_energy: bool = True,
    require_forces: bool = True,
) -> list[Structure]:
    """Read labelled molecules from ``path``.

    Args:
        path: Data file.
        format: ``"auto"`` (detect from the contents), ``"ase"`` (let ``ase.io`` decide),
            ``"md17"``, ``"rmd17"``, or any format name that ``ase.io.read`` accepts.
        energy_key: Name of the energy in ``atoms.info`` or in the calculator results.
        forces_key: Name of the forces in ``atoms.arrays`` or in the calculator results.
        index: Frames to read, in ``ase.io.read`` syntax (applies to ``.npz`` too).
        require_energy: Raise when a frame has no energy.
        require_forces: Raise when a frame has no forces.

    Returns:
        Validated structures (finite values, no atoms closer than 0.1 Å).

    Raises:
        DataError: For unreadable files, missing labels, NaN/inf values or collapsed geometries.
    """
    path = Path(path)
    _check_request(path, format, index)
    fmt = detect_format(path) if format == "auto" else format
    if fmt in NPZ_LAYOUTS:
        structures = _read_npz(path, NPZ_LAYOUTS[fmt], index)
    else:
        frames = _read_ase(path, None if fmt == "ase" else fmt, index)
        structures = [
            _structure_from_atoms(a, energy_key, forces_key, require_energy, require_forces, f"frame {i} of {path}")
            for i, a in enumerate(frames)
        ]
    return _checked(structures, path, index)


def _checked(structures: list[Structure], path: Path, index: str | int) -> list[Structure]:
    """``structures``, each validated; one sentence for a file with none."""
    if not structures:
        raise DataError(f"{path} contains no frames; check the file and the index {index!r}.")
    for i, s in enumerate(structures):
        s.validate(f"frame {i} of {path}")
    return structures


def _check_request(path: Path, format: str, index: str | int) -> None:
    """One sentence for a path that is no file, a bad index or an unknown format, before reading."""
    if path.is_dir():
        raise DataError(f"data file {path} is a folder; give the data file inside it (e.g. {path}/train.xyz).")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path.")
    check_index(index)
    if format not in FORMATS and format not in ase.io.formats.ioformats:
        raise DataError(f"unknown data format {format!r}; use one of {', '.join(FORMATS)} or an ase.io format name.")


def _read_ase(path: Path, fmt: str | None, index: str | int) -> list[Atoms]:
    try:
        frames = ase.io.read(path, index=index, format=fmt)
    except Exception as exc:
        raise DataError(
            f"could not read {path} ({type(exc).__name__}: {exc}); the file may be truncated or not in the expected format."
        ) from exc
    return frames if isinstance(frames, list) else [frames]


def _label(atoms: Atoms, key: str, per_atom: bool) -> np.ndarray | float | None:
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return store[key]
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    return results.get(key)


def _available_keys(atoms: Atoms) -> list[str]:
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    keys = set(atoms.info) | set(atoms.arrays) | set(results)
    return sorted(keys - {"numbers", "positions"})


def _structure_from_atoms(
    atoms: Atoms, energy_key: str, forces_key: str, require_energy: bool, require_forces: bool, where: str
) -> Structure:
    energy = _label(atoms, energy_key, per_atom=False)
    forces = _label(atoms, forces_key, per_atom=True)
    for value, key, required in ((energy, energy_key, require_energy), (forces, forces_key, require_forces)):
        if value is None and required:
            raise DataError(
                f"{where} has no {key!r} label; the keys present are {_available_keys(atoms)}, "
                "so pass the right one as energy_key/forces_key."
            )
    if forces is not None and np.shape(forces) != (len(atoms), 3):
        raise DataError(f"{where} has forces of shape {np.shape(forces)}, expected ({len(atoms)}, 3).")
    energy, forces = _numeric(energy, energy_key, where), _numeric(forces, forces_key, where)
    if energy is not None and energy.size != 1:
        raise DataError(f"{where} has the label {energy_key!r} of shape {energy.shape}, not one number; give the frame's total energy.")
    structure = Structure.from_atoms(atoms, energy=None if energy is None else float(energy.reshape(-1)[0]), forces=forces)
    structure.weight, structure.energy_weight = (_loss_weight(atoms, key, where) for key in ("weight", "energy_weight"))
    return structure


def _loss_weight(atoms: Atoms, key: str, where: str) -> float:
    """A frame's loss weight ``atoms.info[key]`` (1 when absent), as :meth:`Structure.to_atoms` writes it."""
    value = _numeric(atoms.info.get(key, 1.0), key, where)
    if value.size != 1 or not np.isfinite(value).all() or float(value.reshape(-1)[0]) < 0:
        raise DataError(f"{where} has the loss weight {key!r} = {value.tolist()}, which is not one number >= 0; fix or remove it.")
    return float(value.reshape(-1)[0])


def _numeric(value, key: str, where: str) -> np.ndarray | None:
    """A label as a float64 array; one that is not numbers (a string in an extxyz comment line) is a :class:`DataError`."""
    if value is None:
        return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where} has the label {key!r} = {str(value)[:60]!r}, which is not a number; fix or remove that frame.") from None


def _read_npz(path: Path, layout: dict[str, str], index: str | int) -> list[Structure]:
    try:
        data = np.load(path)
        missing = [k for k in layout.values() if k not in data.files]
        if missing:
            raise DataError(f"{path} lacks the keys {missing}; the keys present are {sorted(data.files)}.")
        arrays = {name: np.asarray(data[key]) for name, key in layout.items()}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"could not read {path} ({type(exc).__name__}: {exc}); the file may be truncated.") from exc
    _check_npz_shapes(path, arrays, layout)
    _check_atomic_numbers(path, arrays["numbers"], layout["numbers"])
    positions = arrays["positions"].reshape(-1, len(arrays["numbers"]), 3)
    energies = arrays["energy"].reshape(-1) * KCAL_PER_MOL
    forces = arrays["forces"].reshape(positions.shape) * KCAL_PER_MOL
    frames = _select(len(positions), index)
    return [Structure(positions[i], arrays["numbers"], energies[i], forces[i]) for i in frames]


def _check_npz_shapes(path: Path, arrays: dict[str, np.ndarray], layout: dict[str, str]) -> None:
    """One sentence naming the array whose shape disagrees with the others (before any reshape)."""
    numbers, positions = arrays["numbers"], arrays["positions"]
    n = numbers.size
    expected = {"numbers": (n,), "positions": (len(positions), n, 3), "forces": (len(positions), n, 3), "energy": (len(positions),)}
    if numbers.ndim != 1 or positions.ndim != 3:
        bad = "numbers" if numbers.ndim != 1 else "positions"
    else:
        shapes = {
            "energy": arrays["energy"].reshape(-1).shape
            if arrays["energy"].ndim == 2 and arrays["energy"].shape[1] == 1
            else arrays["energy"].shape,
            "positions": positions.shape,
            "forces": arrays["forces"].shape,
        }
        bad = next((name for name, shape in shapes.items() if shape != expected[name]), None)
    if bad is not None:
        raise DataError(
            f"{path}: array {layout[bad]!r} has shape {arrays[bad].shape}, but {n} atoms ({layout['numbers']!r}) and "
            f"{len(positions)} frames ({layout['positions']!r}) need {expected[bad]}; the arrays do not belong together."
        )


def _check_atomic_numbers(path: Path, numbers: np.ndarray, key: str) -> None:
    """Atomic numbers must be whole numbers of real elements (1, H, to 118, Og)."""
    valid = np.isfinite(numbers) & (numbers == np.round(numbers)) & (numbers >= 1) & (numbers <= 118)
    if not valid.all():
        bad = numbers[~valid][0].item()
        raise DataError(
            f"{path}: array {key!r} holds {bad!r}, which is not an atomic number (1 for H to 118); "
            "check that it is the array of atomic numbers."
        )


INDEX_PATTERN = re.compile(r"\s*-?\d*\s*(:\s*-?\d*\s*(:\s*-?\d*\s*)?)?")


def check_index(index: str | int) -> None:
    """Raise :class:`DataError` unless ``index`` is a frame number or a slice such as ``':100'`` or ``'10:20:2'``."""
    if isinstance(index, int) or (isinstance(index, str) and index.strip() and INDEX_PATTERN.fullmatch(index)):
        return
    raise DataError(f"cannot read the frame index {index!r}; give a frame number (e.g. 5 or -1) or a slice (e.g. ':100' or '10:20').")


def _select(n: int, index: str | int) -> list[int]:
    """Resolve an ``ase.io.read``-style index (``":"``, ``"10:20"``, ``"-1"``, ``5``) to frame numbers."""
    if isinstance(index, int) or (isinstance(index, str) and index.lstrip("-").isdigit()):
        return [range(n)[int(index)]]
    parts = [int(p) if p else None for p in str(index).split(":")]
    return list(range(n))[slice(*parts)]
