"""Reference energies recovered exactly on synthetic data; seeded, reproducible splits."""

from __future__ import annotations

import numpy as np
import pytest

from remul_ff.data.batch import Structure
from remul_ff.data.e0s import fit_e0s_average, resolve_e0s
from remul_ff.data.generate import write_extxyz
from remul_ff.data.splits import load_splits, save_splits, split_indices
from remul_ff.errors import DataError

TRUE_E0S = {1: -13.6, 6: -1025.3, 7: -1479.1, 8: -2035.6}


def synthetic_structures(n: int = 40, seed: int = 0) -> list[Structure]:
    """Molecules of random composition whose energy is exactly the sum of their E0s."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        numbers = rng.choice(list(TRUE_E0S), size=rng.integers(2, 12))
        positions = np.arange(len(numbers))[:, None] * np.array([1.5, 0.0, 0.0])
        out.append(Structure(positions, numbers, sum(TRUE_E0S[int(z)] for z in numbers)))
    return out


def test_average_e0s_are_recovered_exactly():
    e0s = fit_e0s_average(synthetic_structures())
    assert set(e0s) == set(TRUE_E0S)
    for z, value in TRUE_E0S.items():
        assert e0s[z] == pytest.approx(value, abs=1e-8)


def test_isolated_e0s_from_file_and_from_frames(tmp_path):
    isolated = [Structure([[0.0, 0.0, 0.0]], [z], e) for z, e in TRUE_E0S.items()]
    path = tmp_path / "isolated_atoms.xyz"
    write_extxyz(isolated, path)
    train = synthetic_structures(5)
    assert resolve_e0s(str(path), train) == pytest.approx(TRUE_E0S)
    assert resolve_e0s("isolated", train, all_frames=isolated + train) == pytest.approx(TRUE_E0S)


def test_explicit_mapping_and_missing_element():
    train = synthetic_structures(5)
    assert resolve_e0s({"H": -1, "C": -2, "N": -3, "O": -4}, train) == {1: -1.0, 6: -2.0, 7: -3.0, 8: -4.0}
    with pytest.raises(DataError, match="no value for N, O"):
        resolve_e0s({"H": -1, "C": -2}, train)
    with pytest.raises(DataError, match="unknown element 'Xx'"):
        resolve_e0s({"Xx": -1}, train)


def test_splits_are_disjoint_seeded_and_sized():
    splits = split_indices(1000, valid=50, test=0.1, seed=3)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [850, 50, 100]
    assert len(set().union(*map(set, splits.values()))) == 1000
    assert split_indices(1000, valid=50, test=0.1, seed=3) == splits
    assert split_indices(1000, valid=50, test=0.1, seed=4) != splits
    assert len(split_indices(1000, train=950, valid=50)["train"]) == 950


def test_splits_round_trip_and_oversize(tmp_path):
    splits = split_indices(20, valid=0.25, seed=0)
    save_splits(splits, tmp_path / "splits.json")
    assert load_splits(tmp_path / "splits.json") == splits
    with pytest.raises(DataError, match="cannot take"):
        split_indices(10, train=8, valid=5)
