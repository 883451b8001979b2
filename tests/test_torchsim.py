"""remul-ff inside torch-sim: same physics as the ASE calculator and the project's own MD engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule

ts = pytest.importorskip("torch_sim")

from remul_ff.errors import DataError  # noqa: E402
from remul_ff.integrations import REMULCalculator  # noqa: E402
from remul_ff.integrations.torchsim import REMULTorchSimModel  # noqa: E402
from remul_ff.md import MDSettings  # noqa: E402
from tests.helpers import jittered_molecules  # noqa: E402


def mixed_molecules():
    return jittered_molecules("CH3CH2OH", 2) + [molecule("CH4"), molecule("H2O"), molecule("CH3OH")]


def test_energies_and_forces_match_the_ase_calculator_on_a_batch_of_different_molecules(trained_model_file):
    frames = mixed_molecules()
    frames[1].translate([40.0, -7.0, 3.0])  # placement must not matter
    model = REMULTorchSimModel(trained_model_file, device="cpu", dtype=torch.float64)
    out = model(ts.initialize_state(frames, model.device, model.dtype))
    calculator = REMULCalculator(trained_model_file, device="cpu", default_dtype="float64")
    energies = [calculator.get_potential_energy(a) for a in frames]
    forces = np.concatenate([calculator.get_forces(a) for a in frames])
    assert out["energy"].shape == (len(frames),) and out["forces"].shape == (sum(map(len, frames)), 3)
    np.testing.assert_allclose(out["energy"].numpy(), energies, rtol=1e-12, atol=0)
    np.testing.assert_allclose(out["forces"].numpy(), forces, rtol=0, atol=1e-10)


def test_torch_sim_nve_follows_the_project_engine_step_for_step(trained_model_file):
    """Same model, start, momenta and 0.5 fs step: torch-sim's velocity Verlet and ours agree,
    which checks its units (ps, metal) and our forces through its interface."""
    frames = jittered_molecules("CH3CH2OH", 3)
    rng = np.random.default_rng(0)
    for atoms in frames:
        atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses()[:, None] * units.kB * 300))
    model = REMULTorchSimModel(trained_model_file, device="cpu", dtype=torch.float64)
    state = ts.initialize_state(frames, model.device, model.dtype)
    state.momenta = torch.as_tensor(np.concatenate([a.get_momenta() for a in frames]))
    metal = ts.units.UnitSystem.metal
    init, update = ts.nve(
        model=model,
        dt=torch.tensor(0.0005 * float(metal.time), dtype=torch.float64),
        kT=torch.tensor(300 * float(metal.temperature), dtype=torch.float64),
    )
    md_state = init(state)
    for _ in range(40):
        md_state = update(md_state)
    ref = _final_positions(model.model, frames)
    displacement = md_state.positions - ts.initialize_state(frames, model.device, model.dtype).positions
    np.testing.assert_allclose(displacement.numpy(), ref, rtol=0, atol=1e-11)


def _final_positions(model, frames) -> np.ndarray:
    """Displacement of every atom after 40 project-engine NVE steps of 0.5 fs."""
    from remul_ff.md.engine import prepare_state
    from remul_ff.md.integrators import velocity_verlet_step

    settings = MDSettings(timestep_fs=0.5, thermostat="nve", initial_velocities=False)
    state = prepare_state(model, frames, settings, "cpu", torch.float64)
    start = state.positions.clone()
    for _ in range(40):
        velocity_verlet_step(state, model, 0.5 * units.fs)
    return (state.positions - start).numpy()


@pytest.mark.slow
def test_torch_sim_langevin_keeps_64_ethanol_replicas_at_temperature(trained_model_file):
    model = REMULTorchSimModel(trained_model_file, device="cpu", dtype=torch.float64)
    final = ts.integrate(
        system=[molecule("CH3CH2OH")] * 64, model=model, integrator=ts.nvt_langevin, n_steps=400, temperature=300.0, timestep=0.0005, seed=1
    )
    temperature = ts.calc_kT(masses=final.masses, momenta=final.momenta, system_idx=final.system_idx) / units.kB
    assert torch.isfinite(final.positions).all()
    # 64 replicas of 21 momentum components: the mean's standard deviation is ~3.5% of T.
    assert 0.85 * 300 < float(temperature.mean()) < 1.15 * 300


def test_torch_sim_autobatcher_splits_and_restores_the_batch(trained_model_file):
    model = REMULTorchSimModel(trained_model_file, device="cpu", dtype=torch.float64)
    frames = mixed_molecules() * 4
    batcher = ts.BinningAutoBatcher(model, memory_scales_with="n_atoms", max_memory_scaler=30)
    batched = ts.static(frames, model, autobatcher=batcher)
    whole = ts.static(frames, model)
    assert len(batched) == len(frames) == len(whole)
    for a, b in zip(batched, whole):
        assert torch.allclose(a["potential_energy"], b["potential_energy"], rtol=1e-12, atol=0)


def test_a_periodic_state_is_refused_in_one_sentence(trained_model_file):
    atoms = molecule("CH3CH2OH", vacuum=5.0, pbc=True)
    model = REMULTorchSimModel(trained_model_file, device="cpu", dtype=torch.float64)
    with pytest.raises(DataError, match="periodic"):
        model(ts.initialize_state([atoms], model.device, model.dtype))


def test_an_unknown_element_is_named(trained_model_file):
    model = REMULTorchSimModel(trained_model_file, device="cpu", dtype=torch.float64)
    with pytest.raises(DataError, match="not trained on N"):
        model(ts.initialize_state([molecule("NH3")], model.device, model.dtype))


def test_an_unknown_device_is_one_sentence(trained_model_file):
    with pytest.raises(ValueError, match="unknown device 'tpu'; use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        REMULTorchSimModel(trained_model_file, device="tpu")
