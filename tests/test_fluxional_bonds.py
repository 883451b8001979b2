"""A proton that the reference data shows on either of two oxygens (acetylacetone's enol H) may move
between them in MD without counting as a collapse; leaving both still does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from remul_ff.data.bonds import group_name, watched_bonds
from remul_ff.md.analysis import first_bond_break
from remul_ff.md.monitor import CollapseMonitor
from remul_ff.md.state import state_from_atoms

O_O = 2.6  # Å, the two oxygens of a short hydrogen bond (O...H 1.62 Å: not a bond by the covalent cutoff)


def shared_proton(x: float, y: float = 0.0) -> Atoms:
    """C-O ... H ... O-C along x: oxygens at 0 and 2.6 Å, the proton at (x, y)."""
    return Atoms("COHOC", positions=[[-1.3, 0, 0], [0, 0, 0], [x, y, 0], [O_O, 0, 0], [O_O + 1.3, 0, 0]])


def reference_frames(n: int = 40, seed: int = 0) -> list[Atoms]:
    """Half the frames with the proton on the first oxygen, half on the second, with thermal noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = shared_proton(0.98 if k % 2 else O_O - 0.98)
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def test_the_shared_proton_is_one_group_watched_by_its_nearer_oxygen():
    pairs, groups, reference = watched_bonds(shared_proton(0.98), reference_frames())
    names = [group_name(list("COHOC"), pairs[groups == g]) for g in range(len(reference))]
    assert sorted(names) == ["C0-O1", "H2-O1/O3", "O3-C4"]
    assert reference[names.index("H2-O1/O3")] == pytest.approx(0.98, abs=0.02)  # not the 1.3 Å mean of one O-H


def test_without_a_proton_transfer_in_the_data_each_bond_is_its_own_group():
    frames = [shared_proton(0.98) for _ in range(10)]
    pairs, groups, reference = watched_bonds(frames[0], frames)
    assert len(pairs) == len(reference) == 3 and groups.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "x, y, broken",
    [
        (O_O - 0.98, 0.0, False),  # moved to the other oxygen: a proton transfer, as in the data
        (O_O / 2, 0.0, False),  # half-way, 1.3 Å from both
        (O_O / 2, 1.6, True),  # 2.1 Å from both oxygens: it has left the molecule's hydrogen bond
        (0.3, 0.0, True),  # squeezed into its oxygen
    ],
)
def test_the_monitor_allows_a_transfer_but_not_a_loss(x, y, broken):
    state, monitor = _two_replicas()
    state.positions[7] = state.positions[6] + torch.tensor([x, y, 0.0], dtype=torch.float64)  # the proton of replica 1
    collapsed, events = monitor.check(state, 10, 0.005)
    assert collapsed.tolist() == [False, broken]
    assert [e.bond for e in events] == (["H2-O1/O3"] if broken else [])


def _two_replicas():
    state = state_from_atoms([shared_proton(0.98), shared_proton(0.98)], "cpu", torch.float64)
    state.energy, state.forces = torch.zeros(2, dtype=torch.float64), torch.zeros_like(state.positions)
    return state, CollapseMonitor(state, 1e9, 0.5, reference_frames())


def test_dropping_a_replica_keeps_the_groups_of_the_others():
    state, monitor = _two_replicas()
    state.positions[2] = state.positions[1] + torch.tensor([O_O / 2, 1.6, 0.0], dtype=torch.float64)  # replica 0 loses its proton
    collapsed, _ = monitor.check(state, 10, 0.005)
    assert collapsed.tolist() == [True, False]
    kept, atom_keep = state.select(~collapsed)
    monitor.drop(atom_keep)
    assert len(monitor.reference) == 3 and monitor.groups.tolist() == [0, 1, 2, 2] and monitor.bonds.max().item() == 4
    assert monitor.check(kept, 20, 0.01)[1] == []
    kept.positions[2] = kept.positions[1] + torch.tensor([O_O / 2, 1.6, 0.0], dtype=torch.float64)
    assert [e.bond for e in monitor.check(kept, 30, 0.015)[1]] == ["H2-O1/O3"]


def test_saved_frames_are_judged_by_the_same_groups():
    pairs, groups, reference = watched_bonds(shared_proton(0.98), reference_frames())
    frames = [shared_proton(x).positions for x in (0.98, 1.25, O_O - 0.98)] + [shared_proton(O_O / 2, 1.6).positions]
    frame, group, deviation = first_bond_break(frames, pairs, 0.5, reference, groups)
    assert frame == 3 and group_name(list("COHOC"), pairs[groups == group]) == "H2-O1/O3"
    assert deviation == pytest.approx(np.hypot(O_O / 2, 1.6) - reference[group])
    assert first_bond_break(frames[:3], pairs, 0.5, reference, groups) is None


def test_replicas_of_a_molecule_without_reference_frames_keep_their_own_start_lengths():
    from ase.build import molecule

    short, long = molecule("CH4"), molecule("CH4")
    long.set_distance(0, 1, 1.3, fix=0)
    state = state_from_atoms([short, long], "cpu", torch.float64)
    monitor = CollapseMonitor(state, 1e9, 0.5, reference_frames())  # the reference data hold no methane
    first_bonds = {tuple(b): r for b, r in zip(monitor.bonds.tolist(), monitor.reference.tolist())}
    assert first_bonds[(0, 1)] == pytest.approx(short.get_distance(0, 1))
    assert first_bonds[(5, 6)] == pytest.approx(1.3)
