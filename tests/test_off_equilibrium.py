"""Off-equilibrium frames (Δ-xTB labels), their cache, and the per-structure loss weight."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from remul_ff.config import ConfigError, config_from_dict
from remul_ff.data import collate
from remul_ff.data.bonds import bond_lengths, molecular_bonds
from remul_ff.data.off_equilibrium import OffEquilibriumSettings, distort, load_or_make, make_off_equilibrium
from remul_ff.errors import DataError
from remul_ff.models.forces import predict
from remul_ff.training.losses import task_loss
from tests.helpers import jittered_molecules, tiny_model, xtb_labelled


@pytest.fixture(scope="module")
def xtb_frames():
    return xtb_labelled(jittered_molecules("CH3CH2OH", 4, seed=3, scale=0.03))


def test_distortions_stay_within_their_bounds():
    source = xtb_labelled(jittered_molecules("CH3CH2OH", 1, seed=4, scale=0.0))[0]
    settings = OffEquilibriumSettings(rattle=0.0)
    bonds = molecular_bonds(source.to_atoms())
    rng = np.random.default_rng(0)
    for _ in range(40):
        positions = distort(source, settings, rng)
        moved = np.nonzero(np.linalg.norm(positions - source.positions, axis=1) > 1e-12)[0]
        assert len(moved) == 1  # one atom moved, nothing else without a rattle
        shift = float(np.linalg.norm(positions[moved[0]] - source.positions[moved[0]]))
        assert shift <= max(settings.max_stretch, settings.max_compression, settings.max_push) + 1e-12
        change = bond_lengths(positions, bonds) - bond_lengths(source.positions, bonds)
        assert change.min() >= -settings.max_push - 1e-9 and change.max() <= settings.max_stretch + 1e-9


def test_delta_labels_reduce_to_xtb_when_the_source_labels_are_xtb(xtb_frames):
    """E(x') = E_ref(x) + E_xTB(x') - E_xTB(x): with E_ref = E_xTB the labels are plain xTB at x'."""
    settings = OffEquilibriumSettings(fraction=1.0, weight=0.25)
    frames = make_off_equilibrium(xtb_frames, settings, progress=False)
    relabelled = xtb_labelled([f.to_atoms() for f in frames])
    assert len(frames) == len(xtb_frames)
    for made, exact in zip(frames, relabelled):
        assert made.energy == pytest.approx(exact.energy, abs=1e-6)
        np.testing.assert_allclose(made.forces, exact.forces, atol=1e-6)
        assert made.weight == 0.25
    assert max(f.energy - s.energy for f, s in zip(frames, xtb_frames)) <= settings.max_energy + 1e-9


def test_the_cache_is_reused_for_a_new_weight_and_remade_for_new_settings(xtb_frames, tmp_path):
    path = tmp_path / "off.xyz"
    made = load_or_make(xtb_frames, OffEquilibriumSettings(fraction=0.5, weight=0.3), path, progress=False)
    reweighted = load_or_make(xtb_frames, OffEquilibriumSettings(fraction=0.5, weight=0.05), path, progress=False)
    assert len(made) == len(reweighted) == 2
    for a, b in zip(made, reweighted):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)  # extxyz keeps 8 decimals
        assert (a.energy, a.weight, b.weight) == (pytest.approx(b.energy), 0.3, 0.05)
    remade = load_or_make(xtb_frames, OffEquilibriumSettings(fraction=1.0, weight=0.05), path, progress=False)
    assert len(remade) == 4 and len(load_or_make(xtb_frames, OffEquilibriumSettings(fraction=1.0), path, progress=False)) == 4
    other_frames = load_or_make(xtb_frames[:2], OffEquilibriumSettings(fraction=1.0), path, progress=False)
    assert len(other_frames) == 2


def _task_loss(model, *structures):
    batch = collate(list(structures))
    return task_loss(predict(model, batch, training=True), batch)


def test_a_zero_weight_molecule_adds_nothing_to_the_loss(ethanol_structures):
    model = tiny_model()
    first, second = ethanol_structures[0], ethanol_structures[1]
    second.weight = 0.0
    loss_both, loss_alone = _task_loss(model, first, second), _task_loss(model, first)
    assert loss_both.energy_sse.item() == pytest.approx(loss_alone.energy_sse.item())
    assert loss_both.forces_sse.item() == pytest.approx(loss_alone.forces_sse.item())
    both = collate([first, second])
    assert both.weight.tolist() == [1.0, 0.0] and collate([first]).weight is None
    assert [s.weight for s in both.to(dtype=torch.float32).split()] == [1.0, 0.0]


def test_a_zero_energy_weight_molecule_adds_its_forces_but_not_its_energy(ethanol_structures):
    model = tiny_model()
    first, second = ethanol_structures[0], ethanol_structures[1]
    second.energy_weight = 0.0
    loss_both, first_alone, second_alone = _task_loss(model, first, second), _task_loss(model, first), _task_loss(model, second)
    assert loss_both.energy_sse.item() == pytest.approx(first_alone.energy_sse.item())
    assert loss_both.forces_sse.item() == pytest.approx(first_alone.forces_sse.item() + second_alone.forces_sse.item())
    assert second_alone.energy_sse.item() == 0.0
    assert _task_loss(model, dataclasses.replace(second, energy_weight=1.0)).energy_sse.item() > 0  # so the first check can fail
    assert [s.energy_weight for s in collate([first, second]).to(dtype=torch.float32).split()] == [1.0, 0.0]
    assert second.to_atoms().info["energy_weight"] == 0.0


def test_own_md_frames_take_their_energy_weight_from_the_settings_also_from_the_cache(xtb_frames, tmp_path):
    pattern, path = _rotated_md_run(xtb_frames, tmp_path), tmp_path / "off.xyz"
    made = load_or_make(
        xtb_frames, OffEquilibriumSettings(fraction=0.5, md_frames=pattern, md_count=2, md_energy_weight=0.0), path, progress=False
    )
    cached = load_or_make(xtb_frames, OffEquilibriumSettings(fraction=0.5, md_frames=pattern, md_count=2), path, progress=False)
    assert [f.energy_weight for f in made] == [1.0, 1.0, 0.0, 0.0]  # two distorted frames, then two own-MD frames
    assert [f.energy_weight for f in cached] == [1.0] * 4 and cached[2].energy == pytest.approx(made[2].energy)
    with pytest.raises(DataError, match="md_energy_weight must be a finite number >= 0"):
        OffEquilibriumSettings(md_energy_weight=-1.0).validate()


def test_config_section_is_checked():
    config = config_from_dict({"data": {"off_equilibrium": {"fraction": 0.25}}})
    assert config.data.off_equilibrium.fraction == 0.25 and config.data.off_equilibrium.weight == 0.01
    with pytest.raises(ConfigError, match="did you mean 'data.off_equilibrium.weight'"):
        config_from_dict({"data": {"off_equilibrium": {"wieght": 0.2}}})
    with pytest.raises(DataError, match="max_stretch must be a finite number >= 0"):
        make_off_equilibrium([], OffEquilibriumSettings(max_stretch=-1.0), progress=False)


def _rotated_md_run(frames, folder, lengths=(3, 2)):
    """Two trajectories of rotated, shifted, jittered copies of ``frames``; the second stops early."""
    import ase.io
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(5)
    for r, n in enumerate(lengths):
        traj = []
        for k in range(n):
            atoms = frames[k].to_atoms()
            atoms.positions = (atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)) @ Rotation.random(
                random_state=k
            ).as_matrix().T + 7.0
            traj.append(atoms)
        ase.io.write(folder / f"replica_{r:03d}.traj", traj)
    return str(folder / "replica_*.traj")


def test_own_md_frames_get_delta_xtb_labels_in_their_nearest_training_frames_orientation(xtb_frames, tmp_path):
    pattern = _rotated_md_run(xtb_frames, tmp_path)
    settings = OffEquilibriumSettings(fraction=0.0, md_frames=pattern, md_count=4, md_weight=0.2)
    frames = make_off_equilibrium(xtb_frames, settings, progress=False)
    assert len(frames) == 4 and all(f.weight == 0.2 for f in frames)
    relabelled = xtb_labelled([f.to_atoms() for f in frames])  # source labels are xTB, so Δ-xTB labels are plain xTB
    for made, exact in zip(frames, relabelled):
        assert made.energy == pytest.approx(exact.energy, abs=1e-6)
        np.testing.assert_allclose(made.forces, exact.forces, atol=1e-6)
        nearest = min(np.sqrt(((made.positions - s.positions) ** 2).sum(-1).mean()) for s in xtb_frames)
        assert nearest < 0.1  # aligned onto a training frame, not left rotated and shifted
    for made, source in zip(frames[:2], xtb_frames[:2]):  # replica 1 stopped after 2 of 3 frames: they come first
        assert np.sqrt(((made.positions - source.positions) ** 2).sum(-1).mean()) < 0.1


def _marked_run(folder, lengths, first_mark):
    """Trajectories whose frames are H2 molecules shifted along x by a running mark, so a chosen frame tells where it came from."""
    import ase
    import ase.io

    folder.mkdir()
    mark = first_mark
    for r, n in enumerate(lengths):
        traj = []
        for _ in range(n):
            traj.append(ase.Atoms("H2", positions=[[mark, 0, 0], [mark + 0.74, 0, 0]]))
            mark += 1
        ase.io.write(folder / f"replica_{r:03d}.traj", traj)
    return str(folder / "replica_*.traj")


def test_a_list_of_md_globs_takes_md_count_frames_from_each_round_judging_collapses_per_round(tmp_path):
    from remul_ff.data.off_equilibrium import _choose_md_frames

    first = _marked_run(tmp_path / "round1", (5, 5), first_mark=0)  # marks 0-9, no collapse
    second = _marked_run(tmp_path / "round2", (4, 1), first_mark=100)  # marks 100-103; replica 1 (mark 104) stopped early
    settings = OffEquilibriumSettings(md_frames=[first, second], md_count=1)
    chosen = _choose_md_frames(settings, np.random.default_rng(0))
    assert len(chosen) == 2 and chosen[0][0][0, 0] < 10
    # Judged against round 2's own longest trajectory (4 frames, not round 1's 5), only replica 1 collapsed.
    assert chosen[1][0][0, 0] == 104
    with pytest.raises(DataError, match="a glob or a list of globs"):
        OffEquilibriumSettings(md_frames=[first, 3]).validate()


def test_own_md_frames_that_match_no_file_are_refused(xtb_frames, tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        make_off_equilibrium(xtb_frames, OffEquilibriumSettings(fraction=0.0, md_frames=str(tmp_path / "none_*.traj")), progress=False)
