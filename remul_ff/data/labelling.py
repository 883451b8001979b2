"""Label structures with a reference method: PySCF DFT, GFN2-xTB or any ASE calculator, cached per geometry.

One interface, :class:`Labeller` (a ``signature`` naming the method and ``label(atoms)`` returning
energy in eV and forces in eV/Å), and one driver, :func:`label_frames`, which

* looks every geometry up in an append-only cache (one JSON line per labelled frame, keyed by the
  labeller's signature, the atomic numbers and the positions to 1e-6 Å), so a killed run loses at
  most the frame it was computing and a rerun labels only what is missing;
* shows frames/s and the time left (tqdm).

The data sets' own levels of theory (``../shared/data/README.md``): rMD17 ethanol is PBE/def2-SVP,
acetylacetone PBE+D3(BJ)/def2-SVP, 3BPA ωB97X/6-31G(d). :class:`PySCFSettings` takes these as
``xc``, ``basis`` and ``dispersion``. PySCF and ``dftd3`` are optional dependencies
(``pip install "remul-ff[dft]"``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from ase import Atoms

from remul_ff.data.batch import Structure
from remul_ff.errors import DataError
from remul_ff.utils.progress import progress_bar

logger = logging.getLogger(__name__)

HARTREE_EV = 27.211386245988  # CODATA 2018, as PySCF's nist module
BOHR_A = 0.52917721090380
DISPERSIONS = ("d3bj", "d3zero")
GEOMETRY_DECIMALS = 6  # positions are keyed to 1e-6 Å: a re-read file maps onto its cached labels


class Labeller(Protocol):
    """A reference method: ``signature`` names it (and keys its cache), ``label`` computes one frame."""

    signature: str

    def label(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (``[n, 3]``, eV/Å) of ``atoms``."""
        ...


@dataclass
class PySCFSettings:
    """A Kohn-Sham DFT calculation in PySCF.

    Attributes:
        xc: Exchange-correlation functional (PySCF/libxc name: ``PBE``, ``wB97X``, ...).
        basis: Basis set (``def2-svp``, ``6-31g*``, ...).
        dispersion: ``None``, ``d3bj`` (Becke-Johnson damping) or ``d3zero``, added with ``dftd3``.
        density_fit: Density fitting (faster for large molecules, a small change in the labels).
        conv_tol: SCF energy convergence in Hartree.
        grid_level: PySCF's integration-grid level (3 is its default).
        charge: Total charge.
        spin: Number of unpaired electrons (2S).
    """

    xc: str = "PBE"
    basis: str = "def2-svp"
    dispersion: str | None = None
    density_fit: bool = False
    conv_tol: float = 1e-10
    grid_level: int = 3
    charge: int = 0
    spin: int = 0

    def __post_init__(self) -> None:
        if self.dispersion is not None and self.dispersion not in DISPERSIONS:
            raise DataError(f"dispersion {self.dispersion!r} is not one of {', '.join(DISPERSIONS)}; use one or None.")


class PySCFLabeller:
    """Energies and analytic forces from PySCF's restricted (or, with spin, unrestricted) Kohn-Sham DFT."""

    def __init__(self, settings: PySCFSettings | None = None) -> None:
        self.settings = settings or PySCFSettings()
        try:
            import pyscf  # noqa: F401
        except ImportError:
            raise DataError('PySCF is not installed; pip install pyscf (or "remul-ff[dft]") to label with DFT.') from None
        s = self.settings
        self.signature = (
            f"pyscf:{s.xc}/{s.basis}"
            + (f"+{s.dispersion}" if s.dispersion else "")
            + f":df={int(s.density_fit)}:grid={s.grid_level}:q={s.charge}:2s={s.spin}"
        )

    def label(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        from pyscf import dft, gto

        s = self.settings
        mol = gto.M(
            atom=list(zip(atoms.get_chemical_symbols(), atoms.positions.tolist())),
            basis=s.basis,
            unit="Angstrom",
            charge=s.charge,
            spin=s.spin,
            verbose=0,
        )
        mf = dft.RKS(mol) if s.spin == 0 else dft.UKS(mol)
        mf.xc, mf.conv_tol, mf.grids.level = s.xc, s.conv_tol, s.grid_level
        if s.density_fit:
            mf = mf.density_fit()
        energy = mf.kernel()
        if not mf.converged:
            raise DataError(
                f"the SCF of a {atoms.get_chemical_formula()} frame did not converge; check the geometry "
                "(atoms too close?) or raise PySCFSettings.conv_tol."
            )
        gradient = mf.nuc_grad_method().kernel()
        energy, forces = energy * HARTREE_EV, -gradient * HARTREE_EV / BOHR_A
        if s.dispersion:
            d_energy, d_forces = d3_correction(atoms, s.xc, s.dispersion)
            energy, forces = energy + d_energy, forces + d_forces
        return float(energy), np.asarray(forces)


def d3_correction(atoms: Atoms, xc: str, damping: str) -> tuple[float, np.ndarray]:
    """Grimme's D3 energy (eV) and forces (eV/Å) for functional ``xc`` with ``damping`` (``d3bj``/``d3zero``)."""
    try:
        from dftd3.interface import DispersionModel, RationalDampingParam, ZeroDampingParam
    except ImportError:
        raise DataError('dftd3 is not installed; pip install dftd3 (or "remul-ff[dft]") for D3 dispersion.') from None
    param = (RationalDampingParam if damping == "d3bj" else ZeroDampingParam)(method=xc.lower())
    model = DispersionModel(atoms.numbers, atoms.positions / BOHR_A)
    result = model.get_dispersion(param, grad=True)
    return result["energy"] * HARTREE_EV, -np.asarray(result["gradient"]) * HARTREE_EV / BOHR_A


class CalculatorLabeller:
    """Any ASE calculator as a labeller (GFN2-xTB, a Δ-method, another code's interface).

    Args:
        calculator: The ASE calculator.
        signature: A name for the method and its settings; it keys the cache, so two methods must
            never share one.
    """

    def __init__(self, calculator, signature: str) -> None:
        self.calculator, self.signature = calculator, signature

    def label(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        atoms = atoms.copy()
        atoms.calc = self.calculator
        return float(atoms.get_potential_energy()), atoms.get_forces(apply_constraint=False)


def xtb_labeller(method: str = "GFN2-xTB") -> CalculatorLabeller:
    """GFN2-xTB (tblite) as a labeller."""
    from remul_ff.data.generate import xtb_calculator

    return CalculatorLabeller(xtb_calculator(method), f"tblite:{method}")


def geometry_key(signature: str, atoms: Atoms) -> str:
    """The cache key of ``atoms`` under a labeller: its signature, atomic numbers and rounded positions."""
    positions = np.round(np.asarray(atoms.positions, dtype=np.float64), GEOMETRY_DECIMALS) + 0.0  # -0.0 -> 0.0
    digest = hashlib.sha256(signature.encode())
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update(positions.tobytes())
    return digest.hexdigest()


class LabelCache:
    """An append-only file of labels, one JSON line per frame; a torn last line (a killed write) is ignored."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a killed run was writing
                self.entries[entry["key"]] = entry
            self._end_torn_line()

    def get(self, key: str) -> tuple[float, np.ndarray] | None:
        entry = self.entries.get(key)
        return None if entry is None else (entry["energy"], np.asarray(entry["forces"], dtype=np.float64))

    def put(self, key: str, energy: float, forces: np.ndarray, signature: str) -> None:
        entry = {"key": key, "signature": signature, "energy": energy, "forces": np.asarray(forces).tolist()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())  # a label costs seconds to minutes of DFT: keep it through a crash
        self.entries[key] = entry

    def _end_torn_line(self) -> None:
        """Start on a new line if a killed run left a partial one, so the next entry stays readable."""
        if self.path.stat().st_size:
            with open(self.path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                torn = handle.read(1) != b"\n"
            if torn:
                with open(self.path, "a") as handle:
                    handle.write("\n")


def label_frames(
    frames: Sequence[Atoms],
    labeller: Labeller,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "labelling",
    skip_failures: bool = False,
) -> list[Structure]:
    """Label every frame, taking cached labels where the cache has them.

    Args:
        frames: Geometries (any labels on them are ignored).
        labeller: The reference method.
        cache: The cache file (JSON lines); ``None`` keeps nothing between runs.
        progress: Show frames/s and the time left.
        desc: The progress bar's title.
        skip_failures: Leave out (with a logged message) frames the labeller cannot label, e.g. an
            SCF that does not converge on a broken geometry; otherwise that error ends the call.

    Returns:
        One labelled :class:`~remul_ff.data.batch.Structure` per frame, in order (with
        ``skip_failures``, per frame that could be labelled).
    """
    for i, atoms in enumerate(frames):
        check_labellable(atoms, i)  # before any work: a bad frame late in the file costs no DFT
    store = LabelCache(cache) if cache is not None else None
    keys = [geometry_key(labeller.signature, atoms) for atoms in frames]
    missing = [i for i, key in enumerate(keys) if store is None or store.get(key) is None]
    labels: dict[int, tuple[float, np.ndarray]] = {}
    failed: set[int] = set()
    for i in progress_bar(missing, desc=desc, unit="frame", disable=not progress):
        label = _label_one(frames[i], i, labeller, skip_failures)
        if label is None:
            failed.add(i)
            continue
        labels[i] = label
        if store is not None:
            store.put(keys[i], *label, labeller.signature)
    kept = [i for i in range(len(frames)) if i not in failed]
    return [Structure(frames[i].positions, frames[i].numbers, *(labels[i] if i in labels else store.get(keys[i]))) for i in kept]


def _label_one(atoms: Atoms, index: int, labeller: Labeller, skip_failures: bool) -> tuple[float, np.ndarray] | None:
    """One frame's label, or ``None`` (logged) when the labeller fails on it and ``skip_failures``."""
    try:
        return labeller.label(atoms)
    except DataError as exc:
        if not skip_failures:
            raise
        logger.warning(f"frame {index} left unlabelled: {exc}")
        return None


def make_labeller(kind: str, settings: PySCFSettings | None = None, calculator: str | None = None) -> Labeller:
    """The labeller called ``kind``: ``pyscf`` (with ``settings``), ``xtb`` (GFN2-xTB) or ``ase``
    (``calculator``, ``"module:name"`` of an ASE calculator class or factory called without arguments)."""
    if kind == "xtb":
        return xtb_labeller()
    if kind == "pyscf":
        return PySCFLabeller(settings)
    if kind == "ase":
        return imported_calculator_labeller(calculator or "")
    raise DataError(f"unknown labeller {kind!r}; use pyscf, xtb or ase.")


def imported_calculator_labeller(path: str) -> CalculatorLabeller:
    """An ASE calculator named ``"module:name"`` (e.g. ``ase.calculators.emt:EMT``) as a labeller."""
    module_name, _, name = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DataError(
            f"could not import the calculator {path!r} ({exc}); give it as 'module:name', e.g. 'ase.calculators.emt:EMT'."
        ) from None
    return CalculatorLabeller(factory(), f"ase:{path}")


def check_labellable(atoms: Atoms, index: int) -> None:
    """A molecule, with finite positions: what every labeller here expects."""
    if not np.isfinite(atoms.positions).all():
        raise DataError(f"frame {index} has NaN or infinite positions; fix or drop it before labelling.")
    if atoms.pbc.any():
        raise DataError(f"frame {index} is periodic; the labellers here treat molecules only (set pbc=False).")
