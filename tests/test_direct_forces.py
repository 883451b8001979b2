"""The direct-force head and multiple time stepping: physics of the head, its losses, MD and ASE."""

from __future__ import annotations

import csv
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.md.verlet import VelocityVerlet

from remul_ff.cli import main
from remul_ff.config import LossConfig
from remul_ff.data.batch import Structure, collate
from remul_ff.errors import RemulError
from remul_ff.integrations import MultipleTimeStepVerlet, REMULCalculator
from remul_ff.md import MDSettings, run_md
from remul_ff.md.engine import prepare_state
from remul_ff.md.integrators import multiple_time_step, velocity_verlet_step
from remul_ff.models import load_model, predict
from remul_ff.models.common import inference_model, with_fixed_pairs
from remul_ff.models.transformer import with_direct_forces
from remul_ff.training.evaluate import evaluate
from remul_ff.training.losses import random_rotations, remul_losses, task_loss
from tests.helpers import jittered_molecules, labelled, tiny_model
from tests.host_sync import forbid_host_sync

DT = 0.25 * units.fs


def batch_of(frames, dtype=torch.float64):
    return collate([Structure(a.positions, a.numbers) for a in frames], dtype=dtype)


def test_direct_forces_conserve_momentum_and_ignore_translations():
    model = with_direct_forces(tiny_model(direct_forces=True))
    batch = batch_of(jittered_molecules("CH3CH2OH", 3, scale=0.1))
    direct = predict(model, batch).direct_forces
    net = torch.zeros(3, 3, dtype=direct.dtype).index_add_(0, batch.molecule_index, direct)
    assert float(net.abs().max()) < 1e-12 and float(direct.abs().max()) > 1e-3  # zero net force, non-zero forces
    moved = predict(model, batch.replace(positions=batch.positions + torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)))
    torch.testing.assert_close(moved.direct_forces, direct, atol=1e-12, rtol=0)


def test_the_head_leaves_energies_alone_and_its_inference_copy_agrees():
    plain, headed = tiny_model(), tiny_model(direct_forces=True)
    batch = batch_of(jittered_molecules("CH3CH2OH", 2))
    full = predict(with_direct_forces(headed), batch)
    torch.testing.assert_close(full.energy, predict(headed, batch).energy, atol=0, rtol=0)  # the view adds, changes nothing
    assert plain.state_dict().keys() < headed.state_dict().keys()
    merged = predict(with_direct_forces(inference_model(headed)), batch)
    torch.testing.assert_close(merged.direct_forces, full.direct_forces, atol=1e-10, rtol=0)
    torch.testing.assert_close(merged.forces, full.forces, atol=1e-10, rtol=0)


def test_direct_forces_alone_need_no_backward_pass():
    model = with_direct_forces(tiny_model(direct_forces=True))
    batch = batch_of(jittered_molecules("CH3CH2OH", 2))
    cheap = predict(model, batch, forces=False)
    assert cheap.forces is None and not cheap.direct_forces.requires_grad
    torch.testing.assert_close(cheap.direct_forces, predict(model, batch).direct_forces, atol=0, rtol=0)


def test_a_model_without_the_head_has_no_direct_view():
    with pytest.raises(RemulError, match="direct_forces: true"):
        with_direct_forces(tiny_model())


def test_the_task_loss_counts_the_direct_forces_and_remul_checks_their_rotation():
    model = with_direct_forces(tiny_model(direct_forces=True))
    batch = collate(labelled(jittered_molecules("CH3CH2OH", 2)), dtype=torch.float64)
    prediction = predict(model, batch, training=True)
    terms = task_loss(prediction, batch)
    torch.testing.assert_close(terms.direct_sse, (prediction.direct_forces - batch.forces).square().sum())
    config = LossConfig()
    without = LossConfig(direct_forces_weight=0.0)
    assert float(terms.total(config).detach()) > float(terms.total(without).detach())
    identity, shift = torch.eye(3, dtype=torch.float64).expand(2, 3, 3), torch.zeros(2, 3, dtype=torch.float64)
    _, same = remul_losses(model, batch, identity, shift, "prediction")
    assert float(same.direct_sse.detach()) < 1e-20  # an unmoved copy predicts the same forces
    rotations = random_rotations(2, torch.float64, "cpu", torch.Generator().manual_seed(0))
    _, turned = remul_losses(model, batch, rotations, shift, "prediction")
    assert float(turned.direct_sse.detach()) > 1e-6  # an untrained head does not rotate its forces


def test_training_logs_and_evaluation_reports_the_direct_forces(direct_model_file, xtb_ethanol_file):
    rows = list(csv.DictReader(open(direct_model_file.parent / "log.csv")))
    first, last = (float(rows[i]["val_direct_forces_mae_meV_A"]) for i in (0, -1))
    assert last < first  # the head learns
    model = load_model(direct_model_file)
    from remul_ff.data.readers import read_structures

    report = evaluate(model, read_structures(xtb_ethanol_file)[:8], {}, n_rotations=4)
    assert report["direct_forces_mae_meV_A"] > 0 and 0 < report["equi_direct_forces_rel"] < 1


def test_mts_with_k_1_is_velocity_verlet_and_larger_k_stays_close(direct_model_file):
    model = with_direct_forces(load_model(direct_model_file))
    settings = MDSettings(temperature=300, thermostat="nve", forces="mts", mts_k=1)
    frames = jittered_molecules("CH3CH2OH", 2, scale=0.02)
    plain = prepare_state(load_model(direct_model_file), frames, MDSettings(temperature=300, thermostat="nve"), "cpu", torch.float64)
    mts = prepare_state(model, frames, settings, "cpu", torch.float64)
    for _ in range(20):
        velocity_verlet_step(plain, load_model(direct_model_file), DT)
        multiple_time_step(mts, model, lambda s, m: velocity_verlet_step(s, m, DT), 1, DT)
    torch.testing.assert_close(mts.positions, plain.positions, atol=1e-12, rtol=0)
    mts4 = prepare_state(model, frames, dataclasses.replace(settings, mts_k=4), "cpu", torch.float64)
    for _ in range(20):
        multiple_time_step(mts4, model, lambda s, m: velocity_verlet_step(s, m, DT), 4, DT)
    gap = float((mts4.positions - plain.positions).abs().max())
    assert 0 < gap < 0.01  # another integrator of the same forces: close, not equal


def thermo(folder) -> np.ndarray:
    rows = list(csv.DictReader(open(folder / "thermo.csv")))
    return np.array([float(r["e_tot_eV"]) for r in rows])


def test_mts_conserves_energy_where_direct_forces_alone_drift(direct_model_file, tmp_path):
    frames = jittered_molecules("CH3CH2OH", 1, scale=0.02)
    spread = {}
    for forces, k in (("conservative", 1), ("mts", 4), ("direct", 1)):
        settings = MDSettings(
            temperature=300, thermostat="nve", timestep_fs=0.25, total_time_fs=100, forces=forces, mts_k=k, thermo_interval=4
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_md(direct_model_file, frames, settings, tmp_path / forces, progress=False)
        assert any("does not conserve energy" in str(w.message) for w in caught) == (forces == "direct")
        spread[forces] = np.ptp(thermo(tmp_path / forces))
    # Measured when written: 0.3, 2.5 and 1400 meV over 100 fs.
    assert spread["mts"] < 0.1 * spread["direct"]
    assert spread["conservative"] < spread["direct"]


def test_the_ase_integrator_follows_the_md_engine(direct_model_file, tmp_path):
    frames = jittered_molecules("CH3CH2OH", 1, scale=0.02)
    settings = MDSettings(temperature=300, thermostat="nve", timestep_fs=0.25, total_time_fs=10, forces="mts", mts_k=4, write_interval=40)
    run_md(direct_model_file, frames, settings, tmp_path, progress=False)
    import ase.io

    engine = ase.io.read(tmp_path / "replica_000.traj", index=":")
    atoms = engine[0].copy()
    atoms.positions += frames[0].positions.mean(0)
    atoms.calc = REMULCalculator(direct_model_file)
    MultipleTimeStepVerlet(atoms, DT, k=4).run(40)
    np.testing.assert_allclose(atoms.positions - atoms.positions.mean(0), engine[-1].positions - engine[-1].positions.mean(0), atol=1e-10)
    reference = engine[0].copy()
    reference.calc = REMULCalculator(direct_model_file)
    one = engine[0].copy()
    one.calc = REMULCalculator(direct_model_file)
    VelocityVerlet(reference, DT).run(8)
    MultipleTimeStepVerlet(one, DT, k=1).run(8)
    np.testing.assert_allclose(one.positions, reference.positions, atol=1e-12)


def test_the_calculator_gives_direct_forces_on_request_and_in_direct_mode(direct_model_file):
    atoms = jittered_molecules("CH3CH2OH", 1)[0]
    atoms.calc = REMULCalculator(direct_model_file)
    direct = atoms.calc.get_property("direct_forces", atoms)
    conservative = atoms.get_forces()
    assert direct.shape == (9, 3) and not np.allclose(direct, conservative)
    with pytest.warns(UserWarning, match="does not conserve energy"):
        atoms.calc = REMULCalculator(direct_model_file, forces="direct")
    np.testing.assert_allclose(atoms.get_forces(), direct, atol=1e-12)
    with pytest.raises(ValueError, match="direct_forces: true"):
        REMULCalculator(model=tiny_model(), forces="direct")
    with pytest.raises(ValueError, match="direct_forces: true"):
        plain = jittered_molecules("CH3CH2OH", 1)[0]
        plain.calc = REMULCalculator(model=tiny_model())
        MultipleTimeStepVerlet(plain, DT)


def test_mts_resumes_mid_cycle_exactly(direct_model_file, tmp_path):
    frames = jittered_molecules("CH3CH2OH", 2, scale=0.02)
    common = dict(temperature=400, thermostat="langevin", timestep_fs=0.5, forces="mts", mts_k=4, write_interval=0)
    whole = run_md(direct_model_file, frames, MDSettings(total_time_fs=15, **common), tmp_path / "whole", progress=False)
    first = MDSettings(total_time_fs=5, restart_every=10, **common)  # 10 steps: in the middle of the third cycle
    run_md(direct_model_file, frames, first, tmp_path / "parts", progress=False)
    rest = MDSettings(total_time_fs=15, restart_every=10, **common)
    run_md(direct_model_file, frames, rest, tmp_path / "parts", resume=True, progress=False)
    assert whole.n_steps == 30
    np.testing.assert_allclose(thermo(tmp_path / "parts")[-1], thermo(tmp_path / "whole")[-1], atol=1e-10)


def test_an_mts_step_reads_nothing_back_from_the_device():
    model = with_direct_forces(with_fixed_pairs(inference_model(tiny_model(direct_forces=True)), 9))
    settings = MDSettings(temperature=300, thermostat="nve", forces="mts", mts_k=3)
    state = prepare_state(model, jittered_molecules("CH3CH2OH", 2, scale=0.02), settings, "cpu", torch.float64)
    inner = lambda s, m: velocity_verlet_step(s, m, DT)  # noqa: E731
    multiple_time_step(state, model, inner, 3, DT)  # fills the state's caches
    with forbid_host_sync():
        for _ in range(6):
            multiple_time_step(state, model, inner, 3, DT)


def test_direct_modes_refuse_models_without_the_head_in_one_sentence(trained_model_file, tmp_path, capsys):
    with pytest.raises(RemulError, match="direct_forces: true"):
        run_md(trained_model_file, jittered_molecules("CH3CH2OH", 1), {"forces": "mts"}, tmp_path / "a", progress=False)
    with pytest.raises(RemulError, match="the force mode must be one of conservative, direct, mts, but got"):
        run_md(trained_model_file, jittered_molecules("CH3CH2OH", 1), {"forces": "fast"}, progress=False)
    with pytest.raises(RemulError, match="integer >= 1"):
        run_md(trained_model_file, jittered_molecules("CH3CH2OH", 1), {"forces": "mts", "mts_k": 0}, progress=False)
    code = main(["md", str(trained_model_file), "CH3CH2OH", "--forces", "mts", "--time", "5fs", "--output", str(tmp_path / "b")])
    assert code == 2 and "direct_forces: true" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_the_compiled_calculator_gives_the_same_direct_and_conservative_forces(direct_model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # compiles here, not from an earlier cache
    eager = REMULCalculator(direct_model_file)
    compiled = REMULCalculator(direct_model_file, compile=True)
    atoms = jittered_molecules("CH3CH2OH", 1)[0]
    for calc in (eager, compiled):
        calc.calculate(atoms.copy(), ["forces"])
    np.testing.assert_allclose(compiled.results["forces"], eager.results["forces"], atol=1e-9)
    np.testing.assert_allclose(compiled.results["direct_forces"], eager.results["direct_forces"], atol=1e-9)
    moved = atoms.copy()
    moved.positions[0] += 0.05
    for calc in (eager, compiled):
        calc.calculate(moved.copy(), ["direct_forces"])  # the direct program alone
    assert "forces" not in compiled.results
    np.testing.assert_allclose(compiled.results["direct_forces"], eager.results["direct_forces"], atol=1e-9)
    assert len(list(tmp_path.rglob("*.pt2"))) == 2  # the full program and the direct-only one


def test_a_compare_spec_runs_its_md_with_the_forces_it_names():
    from remul_ff.compare import MDProtocol, stability_settings

    settings = stability_settings(MDProtocol(forces="mts", mts_k=3))
    assert (settings.forces, settings.mts_k) == ("mts", 3)
    assert stability_settings(MDProtocol()).forces == "conservative"


@pytest.mark.slow
def test_export_writes_the_direct_forces_program_and_refuses_a_model_without_the_head(
    direct_model_file, trained_model_file, tmp_path, capsys
):
    assert main(["export", str(direct_model_file), "-o", str(tmp_path / "direct.pt2"), "--direct"]) == 0
    program = torch.export.load(tmp_path / "direct.pt2").module()
    atoms = jittered_molecules("CH3CH2OH", 1)[0]
    energy, direct = program(torch.tensor(atoms.positions), torch.tensor(atoms.numbers))
    atoms.calc = REMULCalculator(direct_model_file)
    np.testing.assert_allclose(direct.detach().numpy(), atoms.calc.get_property("direct_forces", atoms), atol=1e-9)
    np.testing.assert_allclose(float(energy), atoms.get_potential_energy(), atol=1e-9)
    assert main(["export", str(trained_model_file), "-o", str(tmp_path / "plain.pt2"), "--direct"]) == 2
    assert "no direct-force head" in capsys.readouterr().err and not (tmp_path / "plain.pt2").exists()


def test_the_ase_integrator_asks_for_conservative_forces_once_per_cycle(direct_model_file):
    atoms = jittered_molecules("CH3CH2OH", 1)[0]
    atoms.calc = REMULCalculator(direct_model_file)
    asked = []
    calculate = atoms.calc.calculate
    atoms.calc.calculate = lambda a=None, properties=None, changes=None: asked.append(list(properties)) or calculate(a, properties, changes)
    MultipleTimeStepVerlet(atoms, DT, k=4).run(8)
    # ASE's own loop would ask for atoms.get_forces() after every step: a backward pass on every inner step
    assert sum("forces" in p for p in asked) == 1 + 8 // 4  # the start and the end of each cycle


def test_the_direct_forces_can_learn_the_models_own_conservative_forces():
    model = with_direct_forces(tiny_model(direct_forces=True))
    batch = collate(labelled(jittered_molecules("CH3CH2OH", 2)), dtype=torch.float64)
    prediction = predict(model, batch, training=True)
    own = task_loss(prediction, batch, "conservative")
    torch.testing.assert_close(own.direct_sse, (prediction.direct_forces - prediction.forces).square().sum())
    assert float(own.direct_sse.detach()) != float(task_loss(prediction, batch).direct_sse.detach())  # not the labels
    # The target is held fixed: this term trains the head, not the energy behind the conservative forces.
    assert torch.autograd.grad(own.direct_sse, prediction.forces, retain_graph=True, allow_unused=True) == (None,)
    identity, shift = torch.eye(3, dtype=torch.float64).expand(2, 3, 3), torch.zeros(2, 3, dtype=torch.float64)
    task, moved = remul_losses(model, batch, identity, shift, "label", direct_target="conservative")
    torch.testing.assert_close(task.direct_sse, own.direct_sse)
    torch.testing.assert_close(moved.direct_sse, own.direct_sse)  # the unmoved copy: the same target


def head_fit_config(init_from, data_file, out, model_changes=(), **train):
    from remul_ff.config import config_from_dict

    model = {"kind": "transformer", "width": 32, "depth": 2, "heads": 4, "r_max": 4.0, "num_radial": 8, "direct_forces": True}
    model.update(model_changes)
    return config_from_dict(
        {
            "output_dir": str(out),
            "data": {"path": str(data_file), "valid": 8},
            "model": model,
            "loss": {"mode": "augment", "stage_two_fraction": 0.2, "direct_forces_target": "conservative"},
            "train": {"epochs": 20, "batch_size": 4, "lr": 3e-3, "ema_decay": 0.0, "eval_rotations": 0, "device": "cpu"}
            | {"init_from": init_from and str(init_from), "trainable": "direct_forces_head"}
            | train,
        }
    )


def test_fitting_the_head_alone_keeps_the_energy_and_brings_the_direct_forces_to_the_conservative(
    direct_model_file, xtb_ethanol_file, tmp_path
):
    from remul_ff.data.readers import read_structures
    from remul_ff.training.trainer import Trainer

    trainer = Trainer(head_fit_config(direct_model_file, xtb_ethanol_file, tmp_path), progress=False)
    trainer.run()
    assert (trainer.loss_config.energy_weight, trainer.loss_config.forces_weight) == (0, 0)  # nothing to train there
    before, after = load_model(direct_model_file), load_model(tmp_path / "model.pt")
    batch = collate(read_structures(xtb_ethanol_file)[:16], dtype=torch.float64)
    old, new = predict(with_direct_forces(before), batch), predict(with_direct_forces(after), batch)
    torch.testing.assert_close(new.energy, old.energy, atol=0, rtol=0)
    torch.testing.assert_close(new.forces, old.forces, atol=0, rtol=0)
    gap_before, gap_after = ((p.direct_forces - p.forces).abs().mean() for p in (old, new))
    assert float(gap_after) < 0.7 * float(gap_before), (float(gap_before), float(gap_after))


def test_fitting_the_head_alone_needs_a_head_and_a_trained_model(direct_model_file, xtb_ethanol_file, tmp_path):
    from remul_ff.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="name it in train.init_from"):
        head_fit_config(None, xtb_ethanol_file, tmp_path)
    values = head_fit_config(direct_model_file, xtb_ethanol_file, tmp_path).to_dict()
    values["model"]["direct_forces"] = False
    with pytest.raises(ConfigError, match="set model.direct_forces: true"):
        config_from_dict(values)


def test_a_new_deeper_head_fits_onto_a_model_trained_without_one(trained_model_file, xtb_ethanol_file, tmp_path):
    from remul_ff.training.trainer import Trainer

    Trainer(head_fit_config(trained_model_file, xtb_ethanol_file, tmp_path, {"direct_forces_layers": 2}, epochs=3), progress=False).run()
    before, after = load_model(trained_model_file), load_model(tmp_path / "model.pt")
    assert len(after.force_head.hidden) == 2  # one more width x width layer and its activation
    batch = batch_of(jittered_molecules("CH3CH2OH", 3))
    new = predict(with_direct_forces(after), batch)
    torch.testing.assert_close(new.energy, predict(before, batch).energy, atol=0, rtol=0)
    assert float(new.direct_forces.abs().max()) > 1e-3
    with pytest.raises(RemulError, match="does not match"):  # the trunk must still be the start's
        Trainer(head_fit_config(trained_model_file, xtb_ethanol_file, tmp_path / "wide", {"width": 64}), progress=False).run()
