"""Off-equilibrium training frames: distorted copies of DFT frames with Δ-GFN2-xTB labels.

Why: MD at 500 K occasionally stretches a bond past anything in the training data (rMD17
ethanol's C-H bonds never exceed 1.27 Å). There an unconstrained model is free to be wrong, and
the REMUL transformer was: along a C-H stretch its energy flattens into a shoulder near 1.4 Å, so
reaching the 0.5 Å collapse criterion cost it a median 0.77 eV against EGNN's 1.30 eV, and a
hydrogen left every few hundred replica-ps (``benchmarks/stability/README.md``). Its rotational
error along the same path is only a few meV, so no equivariance loss can fix this; the model has
to *see* stretched and compressed geometries with sensible labels.

What: each distorted frame ``x'`` is a training frame ``x`` with one bond stretched or compressed,
or one atom pushed in a random direction, plus a small rattle of every atom. No DFT exists at
``x'``, so its labels are the DFT labels of ``x`` plus the GFN2-xTB *difference* between ``x'``
and ``x`` (Δ-learning in reverse)::

    E(x') = E_DFT(x) + E_xTB(x') - E_xTB(x)        F(x') = F_DFT(x) + F_xTB(x') - F_xTB(x)

xTB gets the shape of a stretched bond right to a few tenths of an eV, which is all the model
needs to learn that bonds pull back, while in-distribution the labels stay DFT. These frames get a
small loss weight (``weight``, 0.01) because their labels are approximate and their forces large.

Optionally (``md_frames``), frames of the model's *own* earlier MD are added the same way (one
round of active learning): where its MD went just before a collapse, an unconstrained model can
have a spurious low-energy region that no single-bond distortion visits (acetylacetone: the enol
proton centred between oxygens that open apart: the transformer put the last frames before its
collapses up to 2.0 eV *below* the start, GFN2-xTB 0.25-4.9 eV above;
benchmarks/stability/acac_300K/precollapse_remul_offeq.json). Each such frame is aligned (Kabsch) onto its nearest training
frame, which supplies the DFT part of its Δ-labels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from remul_ff.data.batch import Structure
from remul_ff.data.bonds import molecular_bonds
from remul_ff.errors import DataError
from remul_ff.geometry import closest_pair, kabsch_aligned
from remul_ff.utils.progress import progress_bar

XTB_METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")  # what tblite's ASE calculator accepts


@dataclass
class OffEquilibriumSettings:
    """How many distorted frames to add and how far to distort them (``data.off_equilibrium``).

    Attributes:
        fraction: Distorted frames per training frame (0.2: one for every fifth frame). 0.2 reached
            the accuracy of training without them (rMD17 ethanol, 30 CPU-minutes), where 0.5
            spent a third of each epoch on them (benchmarks/stability/README.md, the ablation).
        max_stretch: Largest stretch of a bond, Å beyond its length in the source frame.
        max_compression: Largest compression of a bond, Å.
        max_push: Largest displacement of one atom in a random direction, Å (bends, approaches).
        rattle: Standard deviation of the Gaussian displacement of every atom, Å.
        min_distance: Distortions that bring two atoms closer than this (Å) are drawn again.
        max_energy: Distortions that raise the xTB energy by more than this (eV) are drawn again:
            3 eV is ~70 kT at 500 K, beyond any geometry MD reaches but above the ~1 eV that
            broke bonds; far harder frames (10 eV, 80 eV/Å forces) would only dominate the loss.
        weight: Loss weight of a distorted frame relative to a DFT frame. 0.01 gives about the
            same energy to break a bond as 0.1 or 0.3 at a smaller cost in accuracy; 0.003 lost
            the protection (benchmarks/stability/README.md, the ablation).
        method: tblite method for the label differences.
        seed: Seed of the choice of frames and distortions.
        md_frames: Glob of trajectory files of the model's own MD (e.g. a compare run's
            ``md/replica_*.traj``), a list of such globs (one per round of active learning), or
            ``None``. From each glob, up to ``md_count`` frames are added: the last three saved
            frames of every replica that stopped early (a collapse; shorter than the glob's
            longest trajectory) first, then random ones.
        md_count: How many own-MD frames to add per glob.
        md_weight: Loss weight of an own-MD frame.
        md_energy_weight: Extra factor on an own-MD frame's energy error (its forces keep
            ``md_weight``). Own-MD frames include the last frames before a collapse, up to ~15 eV
            above the training data (acac at 500 K), where the Δ-xTB energy drifts from DFT: at 1
            they pulled every validation energy up by a constant ~84 meV; 0 trains on their forces
            alone, which carry the repulsion MD needs.
    """

    fraction: float = 0.2
    max_stretch: float = 0.7
    max_compression: float = 0.25
    max_push: float = 0.5
    rattle: float = 0.02
    min_distance: float = 0.6
    max_energy: float = 3.0
    weight: float = 0.01
    method: str = "GFN2-xTB"
    seed: int = 0
    md_frames: str | list | None = None
    md_count: int = 100
    md_weight: float = 0.1
    md_energy_weight: float = 1.0

    def validate(self) -> None:
        """Raise :class:`DataError` for settings that cannot work."""
        numbers = {
            "fraction": self.fraction,
            "max_stretch": self.max_stretch,
            "max_compression": self.max_compression,
            "max_push": self.max_push,
            "rattle": self.rattle,
            "min_distance": self.min_distance,
            "max_energy": self.max_energy,
            "weight": self.weight,
            "md_count": self.md_count,
            "md_weight": self.md_weight,
            "md_energy_weight": self.md_energy_weight,
        }
        for name, value in numbers.items():
            if not np.isfinite(value) or value < 0:
                raise DataError(f"data.off_equilibrium.{name} must be a finite number >= 0, but is {value}.")
        if isinstance(self.md_frames, list) and not all(isinstance(p, str) and p for p in self.md_frames):
            raise DataError(f"data.off_equilibrium.md_frames must be a glob or a list of globs (strings), but is {self.md_frames!r}.")
        if self.method not in XTB_METHODS:
            raise DataError(f"data.off_equilibrium.method must be one of {', '.join(XTB_METHODS)} (tblite), but is {self.method!r}.")


def distort(structure: Structure, settings: OffEquilibriumSettings, rng: np.random.Generator) -> np.ndarray:
    """New positions ``[n, 3]``: one bond stretched/compressed or one atom pushed, then a rattle."""
    bonds = molecular_bonds(structure.to_atoms())
    for _ in range(100):
        positions = structure.positions.copy()
        if len(bonds) and rng.random() < 0.5:
            i, j = bonds[rng.integers(len(bonds))]
            moved, anchor = (j, i) if structure.numbers[j] <= structure.numbers[i] else (i, j)  # move the lighter atom
            direction = positions[moved] - positions[anchor]
            direction /= np.linalg.norm(direction)
            positions[moved] += rng.uniform(-settings.max_compression, settings.max_stretch) * direction
        else:
            direction = rng.normal(size=3)
            positions[rng.integers(len(positions))] += rng.uniform(0, settings.max_push) * direction / np.linalg.norm(direction)
        positions += rng.normal(scale=settings.rattle, size=positions.shape)
        if closest_pair(positions, settings.min_distance)[2] >= settings.min_distance:
            return positions
    raise DataError(
        f"could not distort a frame without bringing atoms closer than {settings.min_distance} Å; "
        "lower data.off_equilibrium.min_distance or the distortion sizes."
    )


def xtb_labels(positions: np.ndarray, numbers: np.ndarray, method: str) -> tuple[float, np.ndarray]:
    """GFN2-xTB (tblite) energy (eV) and forces (eV/Å) of one molecule."""
    from remul_ff.data.generate import xtb_calculator

    atoms = Structure(positions, numbers).to_atoms()
    atoms.calc = xtb_calculator(method)
    try:
        return float(atoms.get_potential_energy()), atoms.get_forces()
    except Exception as exc:  # tblite raises plain exceptions when SCF fails
        raise DataError(f"GFN2-xTB failed on an off-equilibrium frame ({exc}); lower the distortion sizes.") from exc


def delta_labelled(source: Structure, settings: OffEquilibriumSettings, rng: np.random.Generator) -> Structure:
    """A distortion of ``source`` below ``max_energy``, with ``source``'s DFT labels plus the xTB difference."""
    e_source, f_source = xtb_labels(source.positions, source.numbers, settings.method)
    for _ in range(100):
        positions = distort(source, settings, rng)
        e_new, f_new = xtb_labels(positions, source.numbers, settings.method)
        if e_new - e_source <= settings.max_energy:
            return Structure(
                positions, source.numbers, source.energy + e_new - e_source, source.forces + f_new - f_source, weight=settings.weight
            )
    raise DataError(
        f"no distortion of a frame stayed below data.off_equilibrium.max_energy = {settings.max_energy} eV "
        "in 100 draws; raise max_energy or lower the distortion sizes."
    )


def make_off_equilibrium(train: list[Structure], settings: OffEquilibriumSettings, progress: bool = True) -> list[Structure]:
    """``round(fraction * len(train))`` distorted frames, each from a different training frame where possible."""
    settings.validate()
    rng = np.random.default_rng(settings.seed)
    count = _distorted_count(train, settings)
    sources = rng.permutation(np.resize(np.arange(len(train)), count)) if count else []
    frames = []
    for k in progress_bar(sources, desc="off-equilibrium frames (xTB)", disable=not progress):
        source = train[int(k)]
        if source.energy is None or source.forces is None:
            raise DataError("off-equilibrium frames need energy and force labels on every training frame.")
        frames.append(delta_labelled(source, settings, rng))
    if settings.md_frames:
        frames += own_md_frames(train, settings, rng, progress)
    return frames


def own_md_frames(
    train: list[Structure], settings: OffEquilibriumSettings, rng: np.random.Generator, progress: bool = True
) -> list[Structure]:
    """Frames of the model's own MD (``settings.md_frames``), Δ-xTB labelled against their nearest training frame."""
    chosen = _choose_md_frames(settings, rng)
    frames = []
    for positions, numbers in progress_bar(chosen, desc="own-MD frames (xTB)", disable=not progress):
        source, aligned = _nearest_training_frame(train, positions, numbers)
        e_source, f_source = xtb_labels(source.positions, numbers, settings.method)
        e_new, f_new = xtb_labels(aligned, numbers, settings.method)
        frames.append(
            Structure(
                aligned,
                numbers,
                source.energy + e_new - e_source,
                source.forces + f_new - f_source,
                weight=settings.md_weight,
                energy_weight=settings.md_energy_weight,
            )
        )
    return frames


def _choose_md_frames(settings: OffEquilibriumSettings, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``md_count`` frames from each glob of ``settings.md_frames``, in the order of the globs."""
    patterns = settings.md_frames if isinstance(settings.md_frames, list) else [settings.md_frames]
    return [frame for pattern in patterns for frame in _choose_run_frames(pattern, settings.md_count, rng)]


def _choose_run_frames(pattern: str, count: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The last three frames of every trajectory that stopped early, then random frames, ``count`` in all."""
    import glob

    import ase.io

    paths = sorted(glob.glob(pattern))
    if not paths:
        raise DataError(f"data.off_equilibrium.md_frames {pattern!r} matches no file; give a glob of MD trajectories.")
    trajectories = [ase.io.read(p, ":") for p in paths]
    full = max(len(t) for t in trajectories)
    last = [a for t in trajectories if len(t) < full for a in t[-3:]]  # the last 100 fs before each collapse
    pool = [a for t in trajectories for a in t[1:]]
    extra = [pool[k] for k in rng.permutation(len(pool))[: max(count - len(last), 0)]]
    return [(a.positions.copy(), a.numbers.copy()) for a in (last + extra)[:count]]


def _nearest_training_frame(train: list[Structure], positions: np.ndarray, numbers: np.ndarray) -> tuple[Structure, np.ndarray]:
    """The training frame of the same molecule closest after optimal superposition, and ``positions`` aligned onto it."""
    best, best_rmsd, best_aligned = None, np.inf, None
    for frame in train:
        if len(frame.numbers) != len(numbers) or not np.array_equal(frame.numbers, numbers):
            continue
        aligned = kabsch_aligned(positions, frame.positions)
        rmsd = float(np.sqrt(((aligned - frame.positions) ** 2).sum(-1).mean()))
        if rmsd < best_rmsd:
            best, best_rmsd, best_aligned = frame, rmsd, aligned
    if best is None:
        raise DataError("an own-MD frame is of a molecule that no training frame has (same atoms, same order).")
    return best, best_aligned


def load_or_make(train: list[Structure], settings: OffEquilibriumSettings, path: Path, progress: bool = True) -> list[Structure]:
    """The frames cached at ``path`` (extxyz), made and written when missing or made with other settings.

    Caching keeps a resumed run on exactly the same frames and spares the xTB calls. The cache
    records the settings that shape the frames; the loss ``weight`` is not one of them, so it is
    always taken from ``settings`` (changing only the weight reuses the frames).
    """
    import ase.io

    from remul_ff.data.generate import write_extxyz

    key = _cache_key(train, settings)
    if path.exists():
        cached = ase.io.read(path, ":")
        if cached and cached[0].info.get(CACHE_KEY) == key:
            distorted = _distorted_count(train, settings)  # then the own-MD frames, if any
            return [
                _with_weight(a, settings.weight) if k < distorted else _with_weight(a, settings.md_weight, settings.md_energy_weight)
                for k, a in enumerate(cached)
            ]
    frames = make_off_equilibrium(train, settings, progress)
    write_extxyz(frames, path, info={CACHE_KEY: key})
    return frames


CACHE_KEY = "off_equilibrium_key"


def _cache_key(train: list[Structure], settings: OffEquilibriumSettings) -> str:
    """A digest of everything the distorted frames depend on, except the loss weight."""
    shape = {k: v for k, v in vars(settings).items() if k not in ("weight", "md_weight", "md_energy_weight")}
    fingerprint = float(sum(np.abs(s.positions).sum() for s in train))
    text = json.dumps({**shape, "train_frames": len(train), "train_fingerprint": round(fingerprint, 3)}, sort_keys=True)
    return "k" + hashlib.sha256(text.encode()).hexdigest()[:16]  # a token extxyz reads back as a string, not JSON or a number


def _distorted_count(train: list[Structure], settings: OffEquilibriumSettings) -> int:
    """How many distorted frames come first (before any own-MD frames)."""
    return int(round(settings.fraction * len(train)))


def _with_weight(atoms, weight: float, energy_weight: float = 1.0) -> Structure:
    structure = Structure.from_atoms(atoms, atoms.get_potential_energy(), atoms.get_forces())
    structure.weight, structure.energy_weight = weight, energy_weight
    return structure
