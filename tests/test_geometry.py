"""The host-side pair helpers of :mod:`remul_ff.geometry`: the cell list above the all-pairs size finds
the same closest pair as every pair does, so input checks and the off-equilibrium frames agree at any size."""

from __future__ import annotations

import numpy as np

import remul_ff.geometry as geometry


def test_the_cell_list_finds_the_closest_pair_that_every_pair_finds(monkeypatch):
    positions = np.random.default_rng(0).uniform(0, 6, size=(40, 3))
    every = geometry.closest_pair(positions, 0.5)
    distances = geometry.all_pair_distances(positions)
    assert every[2] == distances.min() and len(distances) == 40 * 39 // 2
    monkeypatch.setattr(geometry, "ALL_PAIRS_MAX_ATOMS", 10)  # now a cell list within the cutoff
    listed = geometry.closest_pair(positions, every[2] + 1e-6)
    assert listed[:2] == every[:2] and np.isclose(listed[2], every[2])
    assert geometry.closest_pair(positions, every[2] * 0.99)[2] == np.inf  # nothing within the cutoff
    i, j, d = geometry.pair_distances(positions, 2.0)
    assert np.all(i < j) and np.all(d < 2.0) and len(d) == np.count_nonzero(distances < 2.0)


def test_reflections_mirror_about_half_the_motions_and_leave_the_plain_draw_as_it_was():
    import torch

    torch.manual_seed(5)
    plain = geometry.random_rigid_motion(400, torch.float64, "cpu")
    torch.manual_seed(5)
    rotations, translations = geometry.random_rigid_motion(400, torch.float64, "cpu", reflections=True)
    determinants = torch.linalg.det(rotations)
    assert torch.allclose(determinants.abs(), torch.ones(400, dtype=torch.float64))
    assert 150 < int((determinants < 0).sum()) < 250  # improper: the inversion times a rotation
    torch.testing.assert_close(rotations.transpose(1, 2) @ rotations, torch.eye(3, dtype=torch.float64).expand(400, 3, 3))
    assert torch.equal(rotations.abs(), plain[0].abs()) and torch.equal(translations, plain[1])
