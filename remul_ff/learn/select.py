"""Which simulated frames get labels: the stretch before each collapse, then the frames a committee
disagrees on, without near-duplicates of each other or of the training data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from remul_ff.geometry import all_pair_distances
from remul_ff.learn.spec import LearnSelect
from remul_ff.md.monitor import Collapse


@dataclass
class Candidate:
    """A saved MD frame that may get a label, and why."""

    atoms: Atoms
    reason: str  # "collapse" or "deviation"
    deviation: float = 0.0


def distance_fingerprint(atoms: Atoms) -> np.ndarray:
    """Sorted interatomic distances: the same for rotated, translated or permuted copies of a frame."""
    return np.sort(all_pair_distances(np.asarray(atoms.positions, dtype=np.float64)))


def closest_pair(atoms: Atoms) -> float:
    """The shortest interatomic distance, Å."""
    fingerprint = distance_fingerprint(atoms)
    return float(fingerprint[0]) if len(fingerprint) else np.inf


def replica_frames(md_dir: Path, replica: int) -> list[Atoms]:
    """The saved frames of one replica of a ``run_md`` output folder (none if it wrote none)."""
    for suffix in ("traj", "xyz"):
        path = md_dir / f"replica_{replica:03d}.{suffix}"
        if path.exists() and path.stat().st_size:
            return ase.io.read(path, ":")
    return []


def collapse_windows(md_dir: Path, collapses: Sequence[Collapse], write_interval: int, window_steps: int) -> list[Candidate]:
    """The frames saved in the last ``window_steps`` before each collapse, latest first."""
    out = []
    for collapse in collapses:
        frames = replica_frames(md_dir, collapse.replica)
        steps = np.arange(len(frames)) * write_interval
        chosen = np.nonzero((steps < collapse.step) & (steps >= collapse.step - window_steps))[0][::-1]
        out += [Candidate(frames[i], "collapse") for i in chosen]
    return out


def choose(candidates: Sequence[Candidate], known: Sequence[Atoms], settings: LearnSelect, limit: int) -> list[Candidate]:
    """Up to ``limit`` candidates in order of priority (collapse windows, then deviation, largest first),
    skipping broken geometries and near-duplicates of ``known`` frames or of ones already chosen."""
    ordered = sorted(candidates, key=lambda c: (c.reason != "collapse", -c.deviation))
    fingerprints = {}
    for atoms in known:
        fingerprints.setdefault(tuple(sorted(atoms.numbers)), []).append(distance_fingerprint(atoms))
    chosen = []
    for candidate in ordered:
        if len(chosen) >= limit:
            break
        if closest_pair(candidate.atoms) < settings.min_pair_distance:
            continue
        same_molecule = fingerprints.setdefault(tuple(sorted(candidate.atoms.numbers)), [])
        fingerprint = distance_fingerprint(candidate.atoms)
        if same_molecule and min(_rms(fingerprint - other) for other in same_molecule) < settings.min_distance:
            continue
        same_molecule.append(fingerprint)
        chosen.append(candidate)
    return chosen


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if len(values) else 0.0
