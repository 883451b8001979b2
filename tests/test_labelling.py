"""The labellers: PySCF forces are the gradient of its energy, D3 is added, and the cache makes a
killed labelling run lose nothing and label nothing twice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from remul_ff.data.labelling import CalculatorLabeller, LabelCache, PySCFLabeller, PySCFSettings, geometry_key, label_frames
from remul_ff.errors import DataError


class CountingLabeller:
    """A harmonic toy method that counts its calls."""

    signature = "toy:harmonic"

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at

    def label(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt  # the run is killed while computing this frame
        self.calls += 1
        return float((atoms.positions**2).sum()), -2.0 * atoms.positions


def water_frames(n: int) -> list[Atoms]:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def test_a_killed_run_keeps_its_labels_and_a_rerun_labels_only_the_rest(tmp_path):
    frames, cache = water_frames(5), tmp_path / "labels.jsonl"
    with pytest.raises(KeyboardInterrupt):
        label_frames(frames, CountingLabeller(fail_at=3), cache, progress=False)
    assert len(cache.read_text().splitlines()) == 3
    with open(cache, "a") as handle:
        handle.write('{"key": "torn')  # a write cut short by the kill
    rerun = CountingLabeller()
    structures = label_frames(frames, rerun, cache, progress=False)
    assert rerun.calls == 2
    for atoms, structure in zip(frames, structures):
        assert structure.energy == pytest.approx(float((atoms.positions**2).sum()))
        np.testing.assert_allclose(structure.forces, -2.0 * atoms.positions)
    assert len(LabelCache(cache).entries) == 5
    assert all(json.loads(line) for line in cache.read_text().splitlines()[-2:])  # the torn line did not swallow them


def test_the_cache_key_depends_on_method_geometry_and_elements():
    atoms = molecule("H2O")
    moved, other = atoms.copy(), atoms.copy()
    moved.positions[0, 0] += 1e-4
    other.numbers[0] = 16
    keys = {geometry_key("a", atoms), geometry_key("b", atoms), geometry_key("a", moved), geometry_key("a", other)}
    assert len(keys) == 4
    assert geometry_key("a", atoms) == geometry_key("a", atoms.copy())


def test_periodic_or_nan_frames_are_refused_before_any_work(tmp_path):
    bad = molecule("H2O")
    bad.positions[1, 2] = np.nan
    labeller = CountingLabeller()
    with pytest.raises(DataError, match="frame 1 has NaN"):
        label_frames([molecule("H2O"), bad], labeller, tmp_path / "c.jsonl", progress=False)
    assert labeller.calls == 0 and not (tmp_path / "c.jsonl").exists()
    periodic = molecule("H2O", cell=[5, 5, 5], pbc=True)
    with pytest.raises(DataError, match="periodic"):
        label_frames([periodic], CountingLabeller(), progress=False)


def test_any_ase_calculator_is_a_labeller():
    from ase.calculators.emt import EMT

    atoms = molecule("H2O")
    (structure,) = label_frames([atoms], CalculatorLabeller(EMT(), "ase:EMT"), progress=False)
    reference = atoms.copy()
    reference.calc = EMT()
    assert structure.energy == pytest.approx(reference.get_potential_energy())
    np.testing.assert_allclose(structure.forces, reference.get_forces())


def finite_difference_force(labeller, atoms: Atoms, atom: int, axis: int, h: float = 1e-3) -> float:
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[atom, axis] += h
    minus.positions[atom, axis] -= h
    return -(labeller.label(plus)[0] - labeller.label(minus)[0]) / (2 * h)


@pytest.mark.parametrize("dispersion", [None, "d3bj"])
def test_pyscf_forces_are_minus_the_gradient_of_its_energy(dispersion):
    pytest.importorskip("pyscf")
    if dispersion:
        pytest.importorskip("dftd3")
    labeller = PySCFLabeller(PySCFSettings(xc="PBE", basis="sto-3g", dispersion=dispersion))
    atoms = molecule("H2O")
    atoms.positions[1] += [0.05, 0.0, 0.03]
    _, forces = labeller.label(atoms)
    for atom, axis in [(0, 2), (1, 0)]:
        assert forces[atom, axis] == pytest.approx(finite_difference_force(labeller, atoms, atom, axis), abs=2e-3)


def test_d3_adds_an_attraction_that_fades_with_distance():
    pytest.importorskip("dftd3")
    from remul_ff.data.labelling import d3_correction

    def dimer(d):
        return Atoms("ArAr", positions=[[0, 0, 0], [d, 0, 0]])

    near, far = d3_correction(dimer(3.8), "PBE", "d3bj"), d3_correction(dimer(12.0), "PBE", "d3bj")
    assert near[0] < far[0] < 0
    assert near[1][1, 0] < 0 < near[1][0, 0]  # the atoms pull together
    np.testing.assert_allclose(near[1].sum(axis=0), 0.0, atol=1e-12)


def test_an_unknown_dispersion_is_one_sentence():
    with pytest.raises(DataError, match="dispersion 'd4' is not one of d3bj, d3zero"):
        PySCFSettings(dispersion="d4")


def test_cli_label_writes_labels_and_reuses_its_cache(tmp_path, capsys):
    from ase.io import read, write

    from remul_ff.cli import main

    frames = water_frames(2)
    write(tmp_path / "in.xyz", frames)
    out = tmp_path / "out.xyz"
    assert main(["label", str(tmp_path / "in.xyz"), "-o", str(out), "--xc", "LDA", "--basis", "sto-3g"]) == 0
    labelled = read(out, index=":")
    assert len(labelled) == 2 and labelled[0].get_forces().shape == (3, 3)
    assert len((tmp_path / "out.xyz.cache.jsonl").read_text().splitlines()) == 2
    assert "wrote 2 frames labelled with pyscf:LDA/sto-3g" in capsys.readouterr().out


def test_cli_label_refuses_a_periodic_structure_in_one_sentence(tmp_path, capsys):
    from ase.io import write

    from remul_ff.cli import main

    write(tmp_path / "in.xyz", molecule("H2O", cell=[5, 5, 5], pbc=True))
    assert main(["label", str(tmp_path / "in.xyz"), "-o", str(tmp_path / "out.xyz"), "--method", "xtb"]) == 2
    assert "frame 0 is periodic" in capsys.readouterr().err
    assert not (tmp_path / "out.xyz").exists()
