"""Readers: every supported format, hand-checked unit conversions, and each bad-input message."""

from __future__ import annotations

import re

import ase.io
import numpy as np
import pytest

from remul_ff.data.generate import write_extxyz
from remul_ff.data.readers import detect_format, read_structures
from remul_ff.errors import DataError

# 1 kcal/mol = 4184 J/mol / (96485.332 C/mol * 1 V) = 0.0433641 eV, checked by hand.
KCAL_MOL_IN_EV = 0.0433641


def test_extxyz_single_point_calculator_round_trip(tmp_path, ethanol_structures):
    path = tmp_path / "data.xyz"
    write_extxyz(ethanol_structures, path)
    frames = read_structures(path)
    assert len(frames) == len(ethanol_structures)
    for got, want in zip(frames, ethanol_structures):
        np.testing.assert_allclose(got.positions, want.positions, atol=1e-8)
        np.testing.assert_array_equal(got.numbers, want.numbers)
        assert got.energy == pytest.approx(want.energy, abs=1e-8)
        np.testing.assert_allclose(got.forces, want.forces, atol=1e-8)


def test_extxyz_loss_weights_round_trip_and_bad_ones_are_named(tmp_path, ethanol_structures):
    ethanol_structures[0].weight, ethanol_structures[1].energy_weight = 0.25, 0.0
    path = tmp_path / "weighted.xyz"
    write_extxyz(ethanol_structures, path)
    frames = read_structures(path)
    assert [(f.weight, f.energy_weight) for f in frames[:3]] == [(0.25, 1.0), (1.0, 0.0), (1.0, 1.0)]
    atoms = ethanol_structures[2].to_atoms()
    atoms.info["weight"] = -1.0
    ase.io.write(path, [atoms], format="extxyz")
    with pytest.raises(DataError, match="loss weight 'weight' = -1.0, which is not one number >= 0"):
        read_structures(path)


def test_extxyz_custom_keys_in_info_and_arrays(tmp_path, ethanol_structures):
    frames = []
    for s in ethanol_structures:
        atoms = s.to_atoms()
        atoms.calc = None
        atoms.info["REF_energy"] = s.energy
        atoms.arrays["REF_forces"] = s.forces
        frames.append(atoms)
    path = tmp_path / "custom.xyz"
    ase.io.write(path, frames, format="extxyz")
    got = read_structures(path, energy_key="REF_energy", forces_key="REF_forces")
    assert got[2].energy == pytest.approx(ethanol_structures[2].energy)
    np.testing.assert_allclose(got[2].forces, ethanol_structures[2].forces, atol=1e-8)


def test_ase_trajectory_is_read(tmp_path, ethanol_structures):
    path = tmp_path / "data.traj"
    ase.io.write(path, [s.to_atoms() for s in ethanol_structures])
    got = read_structures(path, index="1:3")
    assert len(got) == 2
    assert got[0].energy == pytest.approx(ethanol_structures[1].energy)


def _write_md17(path, energies_kcal, forces_kcal, revised: bool) -> None:
    coords = np.array([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.96]]] * len(energies_kcal))
    z = np.array([8, 1])
    if revised:
        np.savez(path, coords=coords, nuclear_charges=z, energies=energies_kcal, forces=forces_kcal)
    else:
        np.savez(path, R=coords, z=z, E=np.asarray(energies_kcal)[:, None], F=forces_kcal)


@pytest.mark.parametrize("revised,layout", [(False, "md17"), (True, "rmd17")])
def test_md17_npz_converts_kcal_per_mol(tmp_path, revised, layout):
    path = tmp_path / "data.npz"
    forces = np.zeros((2, 2, 3))
    forces[1, 1, 2] = 10.0
    _write_md17(path, [1.0, -2.0], forces, revised)
    assert detect_format(path) == layout
    frames = read_structures(path)
    assert frames[0].energy == pytest.approx(KCAL_MOL_IN_EV, rel=1e-5)
    assert frames[1].energy == pytest.approx(-2 * KCAL_MOL_IN_EV, rel=1e-5)
    assert frames[1].forces[1, 2] == pytest.approx(10 * KCAL_MOL_IN_EV, rel=1e-5)
    np.testing.assert_array_equal(frames[0].numbers, [8, 1])
    assert read_structures(path, format=layout, index="-1")[0].energy == pytest.approx(frames[1].energy)


def test_format_override_is_honoured(tmp_path, ethanol_structures):
    path = tmp_path / "data.txt"  # an extension ase cannot guess from
    write_extxyz(ethanol_structures, tmp_path / "data.xyz")
    (tmp_path / "data.xyz").rename(path)
    assert len(read_structures(path, format="extxyz")) == 5
    with pytest.raises(DataError, match="unknown data format"):
        read_structures(path, format="not-a-format")


def test_truncated_file_is_a_clear_error(tmp_path, ethanol_structures):
    path = tmp_path / "data.xyz"
    write_extxyz(ethanol_structures, path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(DataError, match="truncated"):
        read_structures(path)


def test_missing_keys_name_the_keys_present(tmp_path, ethanol_structures):
    path = tmp_path / "data.xyz"
    write_extxyz(ethanol_structures, path)
    with pytest.raises(DataError, match=r"no 'dft_energy' label; the keys present are \[.*'energy'.*'forces'"):
        read_structures(path, energy_key="dft_energy")


def test_missing_npz_key(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, R=np.zeros((1, 2, 3)), z=np.array([1, 1]), E=np.zeros(1))
    with pytest.raises(DataError, match=r"lacks the keys \['F'\]"):
        read_structures(path)


NPZ_SHAPE_CASES = [  # MD17 layout with 3 frames of 2 atoms, one array changed
    ({"R": np.zeros((3, 5, 3))}, "array 'R' has shape (3, 5, 3), but 2 atoms ('z') and 3 frames ('R') need (3, 2, 3)"),
    ({"F": np.zeros((3, 2, 2))}, "array 'F' has shape (3, 2, 2)"),
    ({"F": np.zeros((2, 2, 3))}, "array 'F' has shape (2, 2, 3)"),
    ({"E": np.zeros(4)}, "array 'E' has shape (4,), but 2 atoms ('z') and 3 frames ('R') need (3,)"),
    ({"z": np.ones((1, 2), int)}, "array 'z' has shape (1, 2)"),
    ({"R": np.zeros((6, 3))}, "array 'R' has shape (6, 3)"),
]


@pytest.mark.parametrize("change, message", NPZ_SHAPE_CASES)
def test_npz_arrays_that_disagree_in_shape_are_named(tmp_path, change, message):
    arrays = {"R": np.zeros((3, 2, 3)), "z": np.array([8, 1]), "E": np.zeros((3, 1)), "F": np.zeros((3, 2, 3))}
    path = tmp_path / "bad.npz"
    np.savez(path, **{**arrays, **change})
    with pytest.raises(DataError, match=re.escape(message)):
        read_structures(path)


@pytest.mark.parametrize("field", ["positions", "energy", "forces"])
def test_non_finite_values_are_rejected(tmp_path, ethanol_structures, field):
    bad = ethanol_structures[3]
    if field == "energy":
        bad.energy = float("inf")
    else:
        getattr(bad, field)[0, 0] = np.nan
    path = tmp_path / "data.xyz"
    write_extxyz(ethanol_structures, path)
    with pytest.raises(DataError, match=f"frame 3 of .* NaN or infinite {field}"):
        read_structures(path)


@pytest.mark.parametrize(
    "energy, message",
    [
        ("abc", "frame 1 of .* has the label 'energy' = 'abc', which is not a number"),
        ('"1 2 3"', r"frame 1 of .* has the label 'energy' of shape \(3,\), not one number"),
    ],
)
def test_an_energy_that_is_not_one_number_is_named(tmp_path, energy, message):
    path = tmp_path / "data.xyz"
    frame = "2\nenergy={} Properties=species:S:1:pos:R:3:forces:R:3\nH 0 0 0 0 0 0\nH 0 0 0.75 0 0 0\n"
    path.write_text(frame.format(-1.0) + frame.format(energy))
    with pytest.raises(DataError, match=message):
        read_structures(path)


def test_a_frame_without_atoms_is_rejected(tmp_path, ethanol_structures):
    path = tmp_path / "data.xyz"
    write_extxyz(ethanol_structures[:2], path)
    with open(path, "a") as f:  # ASE reads a labelled frame of 0 atoms without complaint
        f.write('0\nenergy=-1.0 Properties=species:S:1:pos:R:3:forces:R:3 pbc="F F F"\n')
    with pytest.raises(DataError, match="frame 2 of .* has no atoms; remove that frame"):
        read_structures(path)


def test_atoms_closer_than_0_1_angstrom_are_rejected(tmp_path, ethanol_structures):
    ethanol_structures[1].positions[4] = ethanol_structures[1].positions[2] + [0.05, 0, 0]
    path = tmp_path / "data.xyz"
    write_extxyz(ethanol_structures, path)
    with pytest.raises(DataError, match=r"frame 1 of .* atoms 2 \(O\) and 4 \(H\) only 0.05 Å apart"):
        read_structures(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_structures(tmp_path / "nope.xyz")


def test_a_data_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(DataError, match="is a folder; give the data file inside it"):
        read_structures(tmp_path)
