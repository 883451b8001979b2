"""Geometry of molecules on the host and in batches: random rotations, rotating vectors and whole
batches, Kabsch alignment, and the atom pairs and distances of one molecule. The REMUL loss,
augmentation, the rotational-error checks and the off-equilibrium frames move molecules with these;
input checks, the training domain, h(r) and the learn loop's fingerprints measure them with these.
(The batched pair lists of the models are :mod:`remul_ff.data.neighbors`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list
from e3nn import o3

if TYPE_CHECKING:  # the batch module checks distances with the helpers below
    from remul_ff.data.batch import AtomicBatch

ALL_PAIRS_MAX_ATOMS = 256
"""Up to this many atoms pair checks look at every pair; beyond it a cell list (every pair is n^2 memory)."""


def random_rotations(n: int, dtype: torch.dtype, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[n, 3, 3]`` Haar-uniform rotation matrices.

    Without a generator this is e3nn's ``o3.rand_matrix`` (torch's global RNG). With a CPU
    generator, unit quaternions from normalised Gaussians (also Haar-uniform) are drawn from it,
    which leaves the global RNG untouched.
    """
    if generator is None:
        return o3.rand_matrix(n, dtype=dtype, device=device)
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return o3.quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True)).to(device, dtype)


def rotate_vectors(vectors: torch.Tensor, per_atom_rotations: torch.Tensor) -> torch.Tensor:
    """``R_n v_n`` for each row ``n``."""
    return torch.einsum("nij,nj->ni", per_atom_rotations, vectors)


def rotate_batch(batch: AtomicBatch, rotations: torch.Tensor, translations: torch.Tensor | None = None) -> AtomicBatch:
    """Apply one rigid motion per molecule to positions and (when present) force labels.

    Args:
        batch: Molecules to move.
        rotations: ``[m, 3, 3]`` one rotation per molecule.
        translations: ``[m, 3]`` one translation per molecule, in Å (optional).
    """
    per_atom = rotations[batch.molecule_index]
    positions = rotate_vectors(batch.positions, per_atom)
    if translations is not None:
        positions = positions + translations[batch.molecule_index]
    forces = None if batch.forces is None else rotate_vectors(batch.forces, per_atom)
    return batch.replace(positions=positions, forces=forces)


def random_rigid_motion(
    n: int, dtype: torch.dtype, device: torch.device | str, translation_scale: float = 1.0, reflections: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random rotation and one Gaussian translation (std ``translation_scale`` Å) for each of ``n`` molecules.

    ``reflections``: each rotation is also, with probability 1/2, composed with the inversion
    ``r -> -r`` (an improper rotation, determinant -1), so the motions cover O(3), not only SO(3).
    """
    rotations = random_rotations(n, dtype, device)
    translations = translation_scale * torch.randn(n, 3, dtype=dtype, device=device)
    if reflections:  # drawn after the rest, so runs without reflections draw exactly as before
        rotations = rotations * torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0).to(dtype)[:, None, None]
    return rotations, translations


def kabsch_aligned(moving: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``moving`` [n, 3] rotated and translated onto ``target`` [n, 3] (least squares, proper rotation)."""
    a, b = moving - moving.mean(0), target - target.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return a @ rotation + target.mean(0)


def pair_distances(positions: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``i < j`` of one molecule and their distances: every pair up to :data:`ALL_PAIRS_MAX_ATOMS`
    atoms, only those within ``cutoff`` (Å) beyond, where a cell list finds them."""
    if len(positions) > ALL_PAIRS_MAX_ATOMS:
        i, j, d = neighbor_list("ijd", Atoms(positions=positions), cutoff)
        keep = i < j
        return i[keep], j[keep], d[keep]
    i, j = np.triu_indices(len(positions), 1)
    return i, j, np.linalg.norm(positions[i] - positions[j], axis=1)


def closest_pair(positions: np.ndarray, cutoff: float) -> tuple[int, int, float]:
    """Indices ``i < j`` and distance of the two closest atoms; ``(0, 1, inf)`` when a molecule above
    :data:`ALL_PAIRS_MAX_ATOMS` atoms has no pair within ``cutoff``, or there is no pair."""
    i, j, d = pair_distances(positions, cutoff)
    if not len(d):
        return 0, 1, np.inf
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])


def all_pair_distances(positions: np.ndarray) -> np.ndarray:
    """``[n (n - 1) / 2]`` every interatomic distance of one molecule (``i < j``, row-major), in Å."""
    i, j = np.triu_indices(len(positions), 1)
    return np.linalg.norm(positions[i] - positions[j], axis=-1)
