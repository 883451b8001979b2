"""Rigid motions of molecules: random rotations, rotating vectors and whole batches, and Kabsch
alignment. The REMUL loss, augmentation, the rotational-error checks and the off-equilibrium frames
all move molecules with these."""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3

from remul_ff.data.batch import AtomicBatch


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
    n: int, dtype: torch.dtype, device: torch.device | str, translation_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random rotation and one Gaussian translation (std ``translation_scale`` Å) for each of ``n`` molecules."""
    rotations = random_rotations(n, dtype, device)
    return rotations, translation_scale * torch.randn(n, 3, dtype=dtype, device=device)


def kabsch_aligned(moving: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``moving`` [n, 3] rotated and translated onto ``target`` [n, 3] (least squares, proper rotation)."""
    a, b = moving - moving.mean(0), target - target.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return a @ rotation + target.mean(0)
