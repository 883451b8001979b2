"""The exported program runs in a fresh Python with PyTorch alone and matches the model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase.build import molecule

from remul_ff.cli import main
from remul_ff.integrations import REMULCalculator
from tests.helpers import jittered_molecules

pytestmark = pytest.mark.slow

FRESH_PROCESS = """
import json, sys, torch
program = torch._inductor.aoti_load_package(sys.argv[1]) if sys.argv[2:] == ["aoti"] else torch.export.load(sys.argv[1]).module()
out = []
for positions, numbers in json.loads(sys.stdin.read()):
    energy, forces = program(torch.tensor(positions, dtype=torch.float64), torch.tensor(numbers))
    out.append([float(energy), forces.tolist()])
assert not any(name.startswith("remul_ff") for name in sys.modules), "the program needed remul_ff"
print(json.dumps(out))
"""


@pytest.mark.parametrize("compiled", [False, True], ids=["torch.export", "aotinductor (about a minute)"])
def test_exported_program_matches_the_calculator_in_a_fresh_process(compiled, trained_model_file, tmp_path, capsys):
    if compiled and shutil.which("g++") is None:
        pytest.skip("AOTInductor needs a C++ compiler (g++)")
    path = tmp_path / "model.pt2"
    assert main(["export", str(trained_model_file), "-o", str(path), *(["--aotinductor"] if compiled else [])]) == 0
    assert ("aoti_load_package" if compiled else "torch.export.load") in capsys.readouterr().out
    frames = jittered_molecules("CH3CH2OH", 2) + [molecule("CH4"), molecule("H2O"), molecule("CH3CH2OCH3")]
    frames[0].translate([30.0, 0.0, -5.0])
    inputs = json.dumps([[a.positions.tolist(), a.numbers.tolist()] for a in frames])
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(path), *(["aoti"] if compiled else [])],
        input=inputs,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    calculator = REMULCalculator(trained_model_file, device="cpu", default_dtype="float64")
    for atoms, (energy, forces) in zip(frames, json.loads(run.stdout)):
        reference = calculator.get_potential_energy(atoms)
        assert abs(energy - reference) <= 1e-10 * abs(reference)
        np.testing.assert_allclose(forces, calculator.get_forces(atoms), rtol=0, atol=1e-10)


@pytest.mark.parametrize("output, message", [("model.pt", "should end in .pt2"), ("folder.pt2", "folder")])
def test_export_refuses_a_bad_output_path(trained_model_file, tmp_path, capsys, output, message):
    (tmp_path / "folder.pt2").mkdir()
    assert main(["export", str(trained_model_file), "-o", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not [p for p in tmp_path.rglob("*.pt2") if p.is_file()]


@pytest.mark.skipif(shutil.which("g++") is None, reason="AOTInductor needs a C++ compiler (g++)")
def test_the_compiled_calculator_equals_the_model_and_compiles_once(trained_model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    plain = REMULCalculator(trained_model_file, default_dtype="float64")
    fast = REMULCalculator(trained_model_file, default_dtype="float64", compile=True)
    (package,) = (tmp_path / "remul-ff").glob("*.pt2")
    compiled_at = package.stat().st_mtime_ns
    two_apart = molecule("CH3CH2OH") + molecule("CH4")  # element pairs the model was trained on
    two_apart.positions[9:] += [7.0, 0.0, 0.0]  # pairs beyond r_max (4 Å): the program skips them
    lone_pair = molecule("H2")
    lone_pair.positions[1] = [0.0, 0.0, 6.0]  # no pair within r_max: the all-pairs fallback
    for atoms in jittered_molecules("CH3CH2OH", 2) + [molecule("CH3CH2OCH3"), molecule("H2O"), two_apart, lone_pair]:
        reference = plain.get_potential_energy(atoms)
        assert abs(fast.get_potential_energy(atoms) - reference) <= 1e-10 * abs(reference)
        np.testing.assert_allclose(fast.get_forces(atoms), plain.get_forces(atoms), rtol=0, atol=1e-10)
        np.testing.assert_allclose(fast.results["energies"], plain.results["energies"], rtol=0, atol=1e-10)
    REMULCalculator(trained_model_file, default_dtype="float64", compile=True)  # a second calculator: from the cache
    assert package.stat().st_mtime_ns == compiled_at and len(list((tmp_path / "remul-ff").iterdir())) == 1


def test_serial_and_parallel_packages_are_cached_apart(trained_model_file):
    """Inductor writes parallel kernels only when compiling with several threads: a package compiled
    in a one-thread process must not serve a two-thread one (or it runs serial)."""
    import torch

    from remul_ff.models import load_model
    from remul_ff.models.export import package_digest

    model, threads = load_model(trained_model_file), torch.get_num_threads()
    try:
        digests = []
        for n in (1, 2, 3, 1):
            torch.set_num_threads(n)
            digests.append(package_digest(model))
    finally:
        torch.set_num_threads(threads)
    assert digests[0] == digests[3] != digests[1] == digests[2]
    other = load_model(trained_model_file)
    with torch.no_grad():
        next(other.parameters()).add_(1e-6)
    assert package_digest(other) != package_digest(model)  # and the weights are in the key
    # so are the hyperparameters that no weight records (the envelope's exponent changes the program)
    from tests.helpers import tiny_model

    assert package_digest(tiny_model(envelope_p=5)) != package_digest(tiny_model())


def test_compile_refuses_a_committee(trained_model_file):
    with pytest.raises(ValueError, match="one model on the CPU"):
        REMULCalculator([trained_model_file, trained_model_file], compile=True)


def test_the_calculators_pair_list_is_the_programs_own():
    """The calculator builds the compiled program's pair list from its checks' distances: the same
    pairs in the same order as ``pairs_within`` finds from the positions (so the same sums)."""
    import torch

    from remul_ff.integrations.remul import _Composition
    from remul_ff.models.export import pairs_within

    spread_out = molecule("CH3CH2OCH3")
    spread_out.positions *= 2.5  # some pairs beyond the cutoff
    for atoms in [*jittered_molecules("CH3CH2OH", 3), spread_out, molecule("H2")]:
        composition = _Composition.of(atoms.numbers, None, 1.0)
        distances = np.linalg.norm(atoms.positions[composition.i] - atoms.positions[composition.j], axis=1)
        expected = pairs_within(torch.as_tensor(atoms.positions), 4.0)
        assert torch.equal(composition.pairs_within(distances, 4.0), expected)
    assert 0 < expected.shape[1] and pairs_within(torch.as_tensor(spread_out.positions), 4.0).shape[1] < 9 * 8
