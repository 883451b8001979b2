"""REMULCalculator: agrees with the model, passes ASE's finite-difference check, relaxes, runs ASE MD,
keeps torch's default dtype, and fails with one clear sentence."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.fd import calculate_numerical_forces
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, FIRE

from remul_ff.data.batch import Structure, collate
from remul_ff.errors import CheckpointError, DataError
from remul_ff.integrations import REMULCalculator
from remul_ff.models import load_model, predict
from tests.helpers import jittered_molecules


@pytest.fixture
def ethanol():
    return jittered_molecules("CH3CH2OH", 1, seed=7, scale=0.03)[0]


def test_matches_the_model_called_directly(trained_model_file, ethanol):
    ethanol.calc = REMULCalculator(trained_model_file)
    assert ethanol.calc.model.merged_edge_proj is not None  # it runs the merged inference copy, which must agree with the model file
    model = load_model(trained_model_file)
    prediction = predict(model, collate([Structure.from_atoms(ethanol)]))
    assert ethanol.get_potential_energy() == pytest.approx(float(prediction.energy[0]), abs=1e-9)
    np.testing.assert_allclose(ethanol.get_forces(), prediction.forces.numpy(), atol=1e-9)
    assert ethanol.get_potential_energies().sum() == pytest.approx(ethanol.get_potential_energy(), abs=1e-8)
    assert ethanol.get_potential_energy(force_consistent=True) == ethanol.get_potential_energy()


def test_ase_finite_difference_forces(trained_model_file, ethanol):
    ethanol.calc = REMULCalculator(trained_model_file)
    numeric = calculate_numerical_forces(ethanol, eps=1e-4)
    np.testing.assert_allclose(ethanol.get_forces(), numeric, atol=1e-6)


@pytest.mark.parametrize("optimizer", [BFGS, FIRE])
def test_relaxation_converges(trained_model_file, ethanol, optimizer):
    ethanol.calc = REMULCalculator(trained_model_file)
    converged = optimizer(ethanol, logfile=None).run(fmax=0.02, steps=1000)
    assert converged and np.abs(ethanol.get_forces()).max() < 0.02
    assert 1.2 < ethanol.get_distance(0, 1) < 1.9  # C-C still bonded


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_both_dtypes_leave_the_global_default_alone(trained_model_file, ethanol, dtype):
    before = torch.get_default_dtype()
    calc = REMULCalculator(trained_model_file, default_dtype=dtype)
    ethanol.calc = calc
    forces = ethanol.get_forces()
    assert torch.get_default_dtype() == before
    assert next(calc.model.parameters()).dtype == getattr(torch, dtype)
    assert not any(p.requires_grad for p in calc.model.parameters()) and not calc.model.training
    reference = REMULCalculator(trained_model_file).get_forces(ethanol)
    np.testing.assert_allclose(forces, reference, atol=1e-4 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("dynamics", ["verlet", "langevin", "nose-hoover"])
def test_works_unchanged_with_ase_md(trained_model_file, ethanol, dynamics):
    ethanol.calc = REMULCalculator(trained_model_file)
    dt = 0.5 * units.fs
    dyn = {
        "verlet": lambda: VelocityVerlet(ethanol, dt),
        "langevin": lambda: Langevin(ethanol, dt, temperature_K=300, friction=0.01 / units.fs, fixcm=False),
        "nose-hoover": lambda: NoseHooverChainNVT(ethanol, dt, temperature_K=300, tdamp=50 * dt),
    }[dynamics]()
    dyn.run(20)
    assert np.isfinite(ethanol.get_positions()).all() and ethanol.get_kinetic_energy() > 0


def test_unknown_element_periodic_cell_nan_and_no_atoms_are_clear_errors(trained_model_file):
    calc = REMULCalculator(trained_model_file)
    ammonia = molecule("NH3")
    ammonia.calc = calc
    with pytest.raises(DataError, match="not trained on N; it knows only H, C, O"):
        ammonia.get_potential_energy()
    water = molecule("H2O", vacuum=5.0)
    water.pbc = True
    water.calc = calc
    with pytest.raises(DataError, match="is periodic .* which remul-ff does not support yet"):
        water.get_potential_energy()
    water.pbc = False
    water.positions[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN or infinite positions"):
        water.get_potential_energy()
    nothing = Atoms()
    nothing.calc = calc
    with pytest.raises(DataError, match="the structure has no atoms; give it at least one atom"):
        nothing.get_potential_energy()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"device": "cuda:9"}, "device 'cuda:9'"),
        ({"length_units_to_A": 0}, "length_units_to_A must be a positive number"),
        ({"energy_units_to_eV": float("nan")}, "energy_units_to_eV must be a positive number"),
        ({"energy_units_to_eV": "kcal/mol"}, "energy_units_to_eV must be a positive number"),
    ],
)
def test_bad_calculator_options_are_one_sentence(trained_model_file, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        REMULCalculator(trained_model_file, **options)


@pytest.mark.parametrize(
    "model, message",
    [
        (
            lambda path: torch.nn.Linear(3, 1),
            "model 1 is a Linear, not a remul-ff energy model; load one with remul_ff.models.load_model.",
        ),
        (lambda path: str(path), "model= takes loaded models; give the file"),
        (lambda path: [load_model(path), path], "model= takes loaded models; give the file"),
    ],
    ids=["not an energy model", "a path", "a path in a committee"],
)
def test_model_must_be_a_loaded_remul_ff_model(trained_model_file, model, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        REMULCalculator(model=model(trained_model_file))


def test_a_training_checkpoint_names_the_model_file_beside_it(trained_model_file):
    with pytest.raises(CheckpointError, match=re.escape(f"is a training checkpoint, not a model file; use {trained_model_file}.")):
        REMULCalculator(trained_model_file.with_name("checkpoint.pt"))


def test_unit_factors_may_be_numpy_numbers(trained_model_file):
    calc = REMULCalculator(trained_model_file, length_units_to_A=np.float32(1.0), energy_units_to_eV=np.float64(1.0))
    ethanol = molecule("CH3CH2OH")
    ethanol.calc = calc
    assert np.isfinite(ethanol.get_potential_energy())


def _changed(atoms, edit):
    other = atoms.copy()
    edit(other)
    return other


@pytest.mark.parametrize(
    "edit",
    [
        lambda a: None,
        lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-9),
        lambda a: a.numbers.__setitem__(1, 8),
        lambda a: a.set_cell([6.0, 6.0, 6.0]),
        lambda a: a.set_pbc([True, False, False]),
        lambda a: a.set_initial_charges([0.1] * len(a)),
        lambda a: a.set_initial_magnetic_moments([1.0] * len(a)),
    ],
    ids=["nothing", "positions", "numbers", "cell", "pbc", "charges", "magmoms"],
)
def test_check_state_reports_the_same_changes_as_ase(trained_model_file, ethanol, edit):
    from ase.calculators.calculator import compare_atoms

    calc = REMULCalculator(trained_model_file)
    ethanol.calc = calc
    ethanol.get_potential_energy()
    other = _changed(ethanol, edit)
    assert sorted(calc.check_state(other)) == sorted(compare_atoms(calc.atoms, other))


def test_a_new_unknown_element_is_refused_after_a_known_composition(trained_model_file, ethanol):
    ethanol.calc = REMULCalculator(trained_model_file)
    ethanol.get_potential_energy()
    ethanol.numbers[0] = 7  # the composition check is cached per composition: this one is new
    with pytest.raises(DataError, match="not trained on N"):
        ethanol.get_potential_energy()


def test_unit_factors_scale_energy_and_forces(trained_model_file, ethanol):
    plain = REMULCalculator(trained_model_file)
    scaled = REMULCalculator(trained_model_file, energy_units_to_eV=2.0)
    assert scaled.get_potential_energy(ethanol) == pytest.approx(2 * plain.get_potential_energy(ethanol))
    np.testing.assert_allclose(scaled.get_forces(ethanol), 2 * plain.get_forces(ethanol))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calculator_on_cuda_matches_cpu(trained_model_file, ethanol):
    cpu = REMULCalculator(trained_model_file).get_forces(ethanol)
    cuda = REMULCalculator(trained_model_file, device="cuda").get_forces(ethanol)
    np.testing.assert_allclose(cuda, cpu, atol=1e-9)


def test_calculator_warns_once_outside_the_training_domain(trained_model_file):
    import warnings

    from remul_ff.integrations import OutOfDomainWarning

    calc = REMULCalculator(trained_model_file)
    shortest = calc.model.training_domain["H-C"]  # recorded at training time
    assert 0.5 < shortest < 1.09
    ethanol = molecule("CH3CH2OH")
    ethanol.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        ethanol.get_potential_energy()  # a normal geometry: no warning
    ethanol.set_distance(0, 3, 0.7 * shortest, fix=0)  # a hydrogen pushed into its carbon
    with pytest.warns(OutOfDomainWarning, match=f"pair H-C are {0.7 * shortest:.2f} Å apart, well below the shortest H-C distance"):
        ethanol.get_potential_energy()
    ethanol.set_distance(0, 3, 0.6 * shortest, fix=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        ethanol.get_potential_energy()  # the same problem again: already said
    del calc.model.training_domain["H-O"]
    with pytest.warns(OutOfDomainWarning, match="element pair H-O never occurs in the model's training data"):
        calc.calculate(ethanol)
    oxygen = molecule("O2")
    oxygen.calc = calc
    with pytest.warns(OutOfDomainWarning, match="element pair O-O never occurs"):
        oxygen.get_potential_energy()  # a new composition: its pairs are checked afresh


def test_a_committee_averages_its_members_and_reports_their_spread(trained_model_file):
    first = load_model(trained_model_file)
    second = load_model(trained_model_file)
    with torch.no_grad():
        for parameter in second.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    ethanol = molecule("CH3CH2OH")
    singles = []
    for member in (first, second):
        ethanol.calc = REMULCalculator(model=member)
        singles.append((ethanol.get_potential_energy(), ethanol.get_forces()))
    ethanol.calc = REMULCalculator(model=[first, second])
    energy, forces = ethanol.get_potential_energy(), ethanol.get_forces()
    results = ethanol.calc.results
    assert energy == pytest.approx((singles[0][0] + singles[1][0]) / 2, abs=1e-9)
    np.testing.assert_allclose(forces, (singles[0][1] + singles[1][1]) / 2, atol=1e-9)
    assert results["energy_std"] == pytest.approx(abs(singles[0][0] - singles[1][0]) / 2, abs=1e-9) and results["energy_std"] > 0
    np.testing.assert_allclose(results["forces_std"], np.abs(singles[0][1] - singles[1][1]) / 2, atol=1e-9)
    same = REMULCalculator([trained_model_file, trained_model_file])
    ethanol.calc = same
    assert ethanol.get_potential_energy() == pytest.approx(singles[0][0]) and same.results["energy_std"] == 0.0


def test_the_old_calculators_imports_give_the_integrations_modules_themselves():
    import remul_ff.calculators.mts as old_mts
    import remul_ff.integrations.mts as new_mts
    from remul_ff.calculators import REMULCalculator as Old
    from remul_ff.calculators.remul import REMULCalculator as OldDeep

    assert Old is REMULCalculator and OldDeep is REMULCalculator and old_mts is new_mts
