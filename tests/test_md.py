"""Batched MD: agrees with ASE's integrators, conserves energy, thermostats, detects collapse,
and the analysis functions on hand-made trajectories."""

from __future__ import annotations

import csv
import dataclasses
import math

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.verlet import VelocityVerlet
from torch import nn

from remul_ff.cli import main
from remul_ff.data.bonds import molecular_bonds
from remul_ff.errors import RemulError
from remul_ff.integrations import REMULCalculator
from remul_ff.md import MDSettings, parse_duration_fs, run_md
from remul_ff.md.analysis import (
    distance_histogram,
    energy_drift_mev_per_atom_ps,
    failure_rate,
    first_bond_break,
    h_r_mae,
    poisson_rate_ci,
    stability_time_ps,
    temperature_stats,
)
from remul_ff.md.engine import default_max_temperature, prepare_state
from remul_ff.md.integrators import nose_hoover_chain_step, velocity_verlet_step
from remul_ff.md.monitor import CollapseMonitor
from remul_ff.md.state import MDState, state_from_atoms
from remul_ff.models import load_model
from remul_ff.models.common import ACCELERATOR_ALL_PAIRS_MAX_ATOMS, inference_model, scatter_sum, with_fixed_pairs
from tests.helpers import jittered_molecules, tiny_model
from tests.host_sync import HostSync, forbid_host_sync


def starts(n: int, seed: int = 0) -> list[Atoms]:
    return jittered_molecules("CH3CH2OH", n, seed=seed, scale=0.02)


@pytest.mark.parametrize("thermostat", ["nve", "nose-hoover"])
def test_batched_integrators_match_ase_over_100_steps(trained_model_file, thermostat):
    model = load_model(trained_model_file)
    settings = MDSettings(temperature=300, timestep_fs=0.5, thermostat=thermostat, seed=3, tdamp_fs=25.0)
    state = prepare_state(model, starts(3), settings, "cpu", torch.float64)
    references = [atoms for _, atoms in state.replica_atoms()]  # same initial positions and momenta
    dt = 0.5 * units.fs
    for _ in range(100):
        if thermostat == "nve":
            velocity_verlet_step(state, model, dt)
        else:
            nose_hoover_chain_step(state, model, dt, units.kB * 300)
    for k, atoms in enumerate(references):
        atoms.calc = REMULCalculator(trained_model_file)
        dyn = VelocityVerlet(atoms, dt) if thermostat == "nve" else NoseHooverChainNVT(atoms, dt, temperature_K=300, tdamp=25 * units.fs)
        dyn.run(100)
        ours = state.positions[state.molecule_index == k].numpy()
        np.testing.assert_allclose(ours, atoms.positions, atol=1e-9)


def test_large_cpu_batches_are_split_into_calls_of_whole_replicas_with_the_same_forces(trained_model_file, monkeypatch):
    import remul_ff.md.state as md_state

    model = load_model(trained_model_file)
    mixed = starts(3) + [molecule("H2O"), molecule("CH4")] + starts(2, seed=1)  # 9, 3 and 5 atoms
    whole = md_state.compute_forces(state_from_atoms(mixed, "cpu", torch.float64), model)
    monkeypatch.setattr(md_state, "CPU_PAIRS_PER_CALL", 100)  # ethanol has 72 ordered pairs
    split = state_from_atoms(mixed, "cpu", torch.float64)
    calls = md_state.replica_calls(split.molecule_index, split.atoms_per_replica)
    # pairs 72, 72, 72, 6, 20, 72, 72: a new call starts where the running total before a replica
    # passes a multiple of 100 (0, 72 | 144 | 216, 222, 242 | 314)
    assert [n for *_, n in calls] == [2, 1, 3, 1]
    assert calls[2][:2] == (27, 44) and calls[2][2].tolist() == [0] * 3 + [1] * 5 + [2] * 9
    md_state.compute_forces(split, model)
    np.testing.assert_allclose(split.forces.numpy(), whole.forces.numpy(), atol=1e-12)
    np.testing.assert_allclose(split.energy.numpy(), whole.energy.numpy(), atol=1e-10)


def test_accelerator_calls_are_sized_by_free_memory_and_cover_every_replica_once(monkeypatch):
    import remul_ff.md.state as md_state

    monkeypatch.setattr(md_state, "free_memory_bytes", lambda device: 10 * md_state.BYTES_PER_CANDIDATE_PAIR * 720)
    budget = md_state.pairs_per_call(torch.device("cuda"))
    assert budget == 3600  # half of the free memory: 50 ethanol replicas of 72 ordered pairs
    assert md_state.pairs_per_call(torch.device("cpu")) == md_state.CPU_PAIRS_PER_CALL
    monkeypatch.setattr(md_state, "free_memory_bytes", lambda device: None)
    assert md_state.pairs_per_call(torch.device("cuda")) is None  # unknown free memory: one call, as before
    counts = torch.full((1000,), 9)
    index = torch.repeat_interleave(torch.arange(1000), counts)
    calls = md_state.replica_calls(index, counts, pair_budget=budget)
    assert [n for *_, n in calls] == [50] * 20
    assert torch.equal(torch.cat([index_of_call + 50 * k for k, (_, _, index_of_call, _) in enumerate(calls)]), index)
    assert len(md_state.replica_calls(index, counts)) == 4  # on the CPU: 72,000 pairs in calls of 20,000
    assert calls[-1][1] == 9000


def test_nve_conserves_energy_over_1000_steps(trained_model_file, tmp_path):
    model = load_model(trained_model_file)
    # The test model is trained for seconds, so its surface is rough; collapse limits are lifted
    # because this test is about the integrator, which must conserve energy on any smooth surface.
    settings = MDSettings(
        temperature=300,
        timestep_fs=0.25,
        total_time_fs=250,
        thermostat="nve",
        thermo_interval=10,
        write_interval=0,
        max_temperature=1e5,
        bond_tolerance=100.0,
    )
    result = run_md(model, starts(4), settings, tmp_path, progress=False)
    assert not result.collapses
    rows = list(csv.DictReader(open(tmp_path / "thermo.csv")))
    for replica in range(4):
        e_tot = np.array([float(r["e_tot_eV"]) for r in rows if r["replica"] == str(replica)])
        e_kin = np.array([float(r["e_kin_eV"]) for r in rows if r["replica"] == str(replica)])
        assert len(e_tot) == 101
        # Bound: total-energy fluctuation below 1% of the mean kinetic energy (~0.3 eV here).
        assert np.ptp(e_tot) < 0.01 * e_kin.mean()


def test_langevin_holds_the_target_temperature(trained_model_file, tmp_path):
    model = load_model(trained_model_file)
    settings = MDSettings(
        temperature=400, timestep_fs=0.5, total_time_fs=300, thermostat="langevin", friction=0.05, write_interval=0, thermo_interval=5
    )
    run_md(model, starts(16), settings, tmp_path, progress=False)
    rows = [r for r in csv.DictReader(open(tmp_path / "thermo.csv")) if float(r["time_ps"]) >= 0.1]
    mean, _ = temperature_stats(np.array([float(r["temperature_K"]) for r in rows]))
    # 16 nine-atom replicas, 200 fs after a 100 fs settling: the sample mean is within ~5% of 400 K.
    assert 340 < mean < 460


class PullAndPoison(nn.Module):
    """A deliberately broken potential, keyed by element so that it follows replicas through the
    batch compaction: a constant force ``force`` (eV/Å, along +x) on every Li atom, and NaN energies
    for molecules containing He from call ``nan_call`` on. Everything else feels no force."""

    def __init__(self, force: float, nan_call: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.force, self.nan_call, self.calls = force, nan_call, 0

    def forward(self, positions, atomic_numbers, molecule_index):
        self.calls += 1
        energy = self.weight - self.force * positions[:, 0] * (atomic_numbers == 3)
        if self.calls > self.nan_call:
            poisoned = scatter_sum((atomic_numbers == 2).double(), molecule_index, int(molecule_index.max()) + 1) > 0
            energy = torch.where(poisoned[molecule_index], torch.full_like(energy, float("nan")), energy)
        return energy


def test_collapse_detection_stops_only_the_broken_replicas(tmp_path):
    frames = [Atoms(symbols, positions=[[0, 0, 0], [0.74, 0, 0]]) for symbols in ("H2", "HLi", "HHe", "H2")]
    force, dt_fs = 2.0, 0.5
    model = PullAndPoison(force=force, nan_call=40)
    settings = MDSettings(
        temperature=0,
        timestep_fs=dt_fs,
        total_time_fs=100,
        thermostat="nve",
        write_interval=50,
        max_temperature=1e9,
        initial_velocities=False,
    )
    result = run_md(model, frames, settings, tmp_path, progress=False)
    by_replica = {c.replica: c for c in result.collapses}
    assert set(by_replica) == {1, 2}
    # Constant force from rest: velocity Verlet is exact, x_n = a (n dt)^2 / 2.
    acceleration = force / frames[1].get_masses()[1]
    expected = next(n for n in range(1, 1000) if 0.5 * acceleration * (n * dt_fs * units.fs) ** 2 > 0.5)
    assert by_replica[1].step == expected and "bond H0-Li1" in by_replica[1].reason
    assert by_replica[2].step == 40 and "non-finite" in by_replica[2].reason  # call 1 is the initial forces
    rows = list(csv.DictReader(open(tmp_path / "thermo.csv")))
    assert max(int(r["step"]) for r in rows if r["replica"] == "3") == 200  # healthy replicas ran to the end
    times = result.stability_times_ps()
    assert times[0] == pytest.approx(0.1) and times[2] == pytest.approx(0.02) and times[1] == pytest.approx(expected * dt_fs / 1e3)


def test_default_temperature_guard_fires_at_the_predicted_step(tmp_path):
    frames = [Atoms(symbols, positions=[[0, 0, 0], [0.74, 0, 0]]) for symbols in ("HLi", "H2")]
    force, dt_fs = 2.0, 0.5
    settings = MDSettings(
        temperature=300,
        timestep_fs=dt_fs,
        total_time_fs=200,
        thermostat="nve",
        write_interval=0,
        bond_tolerance=1e9,
        initial_velocities=False,
    )
    result = run_md(PullAndPoison(force=force, nan_call=10**9), frames, settings, tmp_path, progress=False)
    guard = default_max_temperature(300)
    # Constant force from rest: p = F t exactly, and the temperature counts 3 degrees of freedom per atom.
    mass = frames[0].get_masses()[1]
    expected = next(n for n in range(1, 10**4) if (force * n * dt_fs * units.fs) ** 2 / (2 * mass) / (3 * units.kB) > guard)
    assert [(c.replica, c.step) for c in result.collapses] == [(0, expected)]
    assert f"{guard:.0f}] K" in result.collapses[0].reason


def test_default_temperature_guard_is_far_above_the_thermal_noise_of_ethanol():
    """Instantaneous T of N atoms at T0 is T0 chi2(3N) / 3N, so P(T > g) = Q(3N/2, 3N g / 2 T0)."""
    dof, temperature, checks = 27.0, 500.0, 6e5  # ethanol, one check per step of 300 ps at 0.5 fs

    def chance(limit: float) -> float:
        return float(
            torch.special.gammaincc(
                torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(dof * limit / (2 * temperature), dtype=torch.float64)
            )
        )

    assert checks * chance(default_max_temperature(temperature)) < 1e-30
    assert checks * chance(3 * temperature) > 0.1  # the earlier 3 T guard was within reach of thermal noise


def test_monitor_watches_every_bond_of_a_hot_molecule():
    """At 500 K C-C, C-O and O-H often exceed the sum of covalent radii (C-C 1.61 Å in rMD17's first frame)."""
    hot = molecule("CH3CH2OH")
    for i, j, length in [(0, 1, 1.61), (1, 2, 1.50), (2, 3, 1.04), (0, 6, 1.20)]:
        hot.set_distance(i, j, length, fix=0)
    expected = {(0, 1), (0, 6), (0, 7), (0, 8), (1, 2), (1, 4), (1, 5), (2, 3)}
    assert set(map(tuple, molecular_bonds(hot).tolist())) == expected


def test_first_bond_break_in_saved_frames():
    frames = [np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 1.5, 0]]) for _ in range(5)]
    frames[3] = frames[3] + np.array([[0, 0, 0], [0.6, 0, 0], [0, 0, 0]])  # bond (0, 1), index 1, stretched 0.6 Å
    bonds = np.array([[0, 2], [0, 1]])
    assert first_bond_break(frames, bonds, 0.5) == (3, 1, pytest.approx(0.6))
    assert first_bond_break(frames, bonds, 0.7) is None and first_bond_break(frames, bonds[:1], 0.5) is None


def test_stability_and_h_r_on_hand_made_trajectories():
    assert list(stability_time_ps([None, 12.5, None], 300.0)) == [300.0, 12.5, 300.0]
    dimer = [np.array([[0.0, 0, 0], [1.0, 0, 0]])] * 3
    r, h = distance_histogram(dimer, bins=10, r_range=(0.0, 10.0))
    assert h[1] == pytest.approx(0.1 * 10) and h.sum() * 1.0 == pytest.approx(1.0)  # all mass in the 1-2 Å bin
    shifted = distance_histogram([np.array([[0.0, 0, 0], [2.5, 0, 0]])], bins=10, r_range=(0.0, 10.0))[1]
    assert h_r_mae(h, h) == 0.0 and h_r_mae(h, shifted) == pytest.approx(2 * 1.0 / 10)


def test_energy_drift_fit_and_temperature_stats():
    time_ps = np.linspace(0, 10, 101)
    e_tot = -100.0 + 0.009 * time_ps  # 9 meV/ps over 9 atoms
    assert energy_drift_mev_per_atom_ps(time_ps, e_tot, n_atoms=9) == pytest.approx(1.0)
    assert temperature_stats(np.array([290.0, 310.0])) == (300.0, 10.0)


def test_parse_duration():
    assert parse_duration_fs("300ps") == 300_000 and parse_duration_fs("10 fs") == 10 and parse_duration_fs("1ns") == 1e6
    with pytest.raises(ValueError, match="cannot read the duration"):
        parse_duration_fs("long")


def test_md_cli_writes_trajectories_and_thermo(trained_model_file, tmp_path, capsys):
    out = tmp_path / "md"
    assert (
        main(
            [
                "md",
                str(trained_model_file),
                "ethanol",
                "-o",
                str(out),
                "--time",
                "20fs",
                "--replicas",
                "2",
                "--thermostat",
                "nose-hoover",
                "--write-interval",
                "10",
                "--no-progress",
                "--format",
                "extxyz",
            ]
        )
        == 0
    )
    # restart.pt: the finished run's final state, so that --resume (or a longer --time) continues from it
    assert {p.name for p in out.iterdir()} == {"replica_000.xyz", "replica_001.xyz", "thermo.csv", "collapses.json", "restart.pt"}
    assert "2/2 replicas stable" in capsys.readouterr().out


def test_md_cli_reference_data_sets_the_bond_reference(trained_model_file, xtb_ethanol_file, tmp_path, capsys):
    out = tmp_path / "md"
    assert (
        main(
            [
                "md",
                str(trained_model_file),
                str(xtb_ethanol_file),
                "-o",
                str(out),
                "--time",
                "5fs",
                "--replicas",
                "2",
                "--reference",
                str(xtb_ethanol_file),
                "--check-interval",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "2/2 replicas stable" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--reference", "missing.xyz"], "could not read the structure file missing.xyz"),
        (["--check-interval", "0"], "the collapse check interval (steps) must be at least 1, but is 0."),
        (["--write-interval", "-1"], "the write interval (steps) must be 0 or more (0 turns it off), but is -1."),
        (["--thermo-interval", "0"], "the thermo interval (steps) must be at least 1, but is 0."),
        (["--tdamp", "0", "--thermostat", "nose-hoover"], "the Nose-Hoover damping time (fs) must be a positive number, but is 0.0."),
        (["--restart-every", "-5"], "the restart interval (steps) must be 0 or more"),
        (["--temperature", "nan"], "the temperature (K) must be a number >= 0, but is nan."),
        (["--friction", "-1"], "the Langevin friction (1/fs) must be a number >= 0, but is -1.0."),
        (["--timestep", "0"], "the time step (fs) must be a positive number, but is 0.0."),
    ],
)
def test_md_cli_bad_reference_or_check_interval_exits_2_before_writing(trained_model_file, tmp_path, capsys, extra, message):
    out = tmp_path / "md"
    assert main(["md", str(trained_model_file), "ethanol", "-o", str(out), "--time", "5fs", *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_md_cli_unknown_element_exits_2_before_writing(trained_model_file, tmp_path, capsys):
    out = tmp_path / "md"
    assert main(["md", str(trained_model_file), "NH3", "-o", str(out), "--time", "10fs"]) == 2
    assert "not trained on N" in capsys.readouterr().err and not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_md_on_cuda_matches_cpu(trained_model_file):
    settings = MDSettings(temperature=300, timestep_fs=0.5, thermostat="nve", seed=5)
    finals = []
    for device in ("cpu", "cuda"):
        model = load_model(trained_model_file, device=device)
        state = prepare_state(model, starts(3), settings, device, torch.float64)
        for _ in range(20):
            velocity_verlet_step(state, model, 0.5 * units.fs)
        finals.append(state.positions.cpu())
    torch.testing.assert_close(finals[0], finals[1], atol=1e-9, rtol=0)


NH_DT, NH_KT = 0.5 * units.fs, units.kB * 500


def thermostatted(model: nn.Module, n: int = 3, device: str = "cpu") -> MDState:
    settings = MDSettings(temperature=500, timestep_fs=0.5, thermostat="nose-hoover", seed=4, tdamp_fs=25.0)
    return prepare_state(model, starts(n, seed=4), settings, device, torch.float64)


def test_nose_hoover_chain_on_the_device_follows_the_host_chain(trained_model_file):
    model = load_model(trained_model_file)
    host, device = thermostatted(model), thermostatted(model)
    for _ in range(50):
        nose_hoover_chain_step(host, model, NH_DT, NH_KT, on_host=True)
        nose_hoover_chain_step(device, model, NH_DT, NH_KT, on_host=False)
    torch.testing.assert_close(device.momenta, host.momenta, atol=1e-9, rtol=0)
    for name in ("eta", "p_eta"):
        torch.testing.assert_close(device.thermostat[name], host.thermostat[name], atol=1e-9, rtol=0)
    assert float(host.thermostat["p_eta"].abs().max()) > 0  # the chain did act


@pytest.mark.parametrize("kind", ["transformer", "egnn"])
def test_an_md_step_on_fixed_pairs_reads_nothing_back_from_the_device(kind):
    model = with_fixed_pairs(inference_model(tiny_model(kind)), 9)
    state = thermostatted(model)
    nose_hoover_chain_step(state, model, NH_DT, NH_KT, on_host=False)  # the first call finds the pairs and force calls
    with forbid_host_sync():
        for _ in range(3):
            nose_hoover_chain_step(state, model, NH_DT, NH_KT, on_host=False)
            velocity_verlet_step(state, model, NH_DT)
    # the guard can fail: the host thermostat copies to the CPU, the radius graph filters by a mask every step
    with pytest.raises(HostSync), forbid_host_sync():
        nose_hoover_chain_step(state, model, NH_DT, NH_KT, on_host=True)
    radius_model = inference_model(tiny_model(kind))
    velocity_verlet_step(state, radius_model, NH_DT)  # its caches filled, as after the first step of a run
    with pytest.raises(HostSync), forbid_host_sync():  # torch-cluster sizes its search, torch masks: per step
        velocity_verlet_step(state, radius_model, NH_DT)


def test_fixed_pairs_give_the_same_forces_on_a_copy_and_only_for_small_molecules(trained_model_file):
    model = inference_model(load_model(trained_model_file))
    fixed = with_fixed_pairs(model, 9)
    assert fixed.pair_mode == "all" and model.pair_mode == "radius"  # the caller's model is untouched
    assert with_fixed_pairs(model, ACCELERATOR_ALL_PAIRS_MAX_ATOMS + 1) is model
    states = [thermostatted(m) for m in (model, fixed)]
    torch.testing.assert_close(states[1].forces, states[0].forces, atol=1e-10, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nose_hoover_md_on_cuda_does_not_synchronise_after_the_first_step(trained_model_file):
    model = with_fixed_pairs(inference_model(load_model(trained_model_file, device="cuda")), 9)
    state = thermostatted(model, device="cuda")
    nose_hoover_chain_step(state, model, NH_DT, NH_KT)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            nose_hoover_chain_step(state, model, NH_DT, NH_KT)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(state.positions).all()


class KillAtCall(nn.Module):
    """Wraps a model and raises KeyboardInterrupt on call ``n`` (an MD job killed mid-run)."""

    def __init__(self, inner: nn.Module, n: int) -> None:
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, *args):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.inner(*args)


@pytest.mark.parametrize("fmt", ["traj", "extxyz"])
def test_md_restart_continues_exactly(trained_model_file, tmp_path, fmt):
    model = load_model(trained_model_file)
    settings = MDSettings(
        temperature=400,
        timestep_fs=0.5,
        total_time_fs=20,
        thermostat="langevin",
        seed=2,
        write_interval=5,
        thermo_interval=5,
        restart_every=10,
        traj_format=fmt,
    )
    run_md(model, starts(3), settings, tmp_path / "straight", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_md(KillAtCall(model, n=27), starts(3), settings, tmp_path / "resumed", progress=False)  # dies in step 26
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    suffix = "traj" if fmt == "traj" else "xyz"
    for r in range(3):  # a kill in the middle of a frame leaves a torn tail, which ASE cannot parse
        with open(resumed / f"replica_{r:03d}.{suffix}", "ab") as handle:
            handle.write(b"9\nProperties=species:S:1:pos:R:3\nC 0.1 0." if fmt == "extxyz" else b"\x00\x07torn")
    (resumed / ".thermo.csv.abc123.tmp.csv").write_text("")  # a save killed between create and rename
    run_md(model, starts(3), settings, resumed, progress=False, resume=True)  # from step 20
    assert not list(resumed.glob(".*.tmp*"))
    assert (straight / "thermo.csv").read_text() == (resumed / "thermo.csv").read_text()
    for r in range(3):
        a = ase.io.read(straight / f"replica_{r:03d}.{suffix}", index=":")
        b = ase.io.read(resumed / f"replica_{r:03d}.{suffix}", index=":")
        assert len(a) == len(b) == 9
        np.testing.assert_allclose(a[-1].positions, b[-1].positions, atol=1e-12)


def test_a_finished_run_is_not_run_again_on_resume(trained_model_file, tmp_path):
    model = load_model(trained_model_file)
    settings = MDSettings(temperature=300, total_time_fs=7.5, thermostat="langevin", write_interval=5, restart_every=10)
    first = run_md(model, starts(2), settings, tmp_path, progress=False)  # 15 steps: the last restart file was at step 10
    thermo = (tmp_path / "thermo.csv").read_text()
    again = run_md(KillAtCall(model, n=2), starts(2), settings, tmp_path, progress=False, resume=True)  # call 1: initial forces
    assert (tmp_path / "thermo.csv").read_text() == thermo
    assert again.replica_steps_per_s == pytest.approx(first.replica_steps_per_s, rel=0.5) and again.replica_steps_per_s > 0
    longer = run_md(model, starts(2), dataclasses.replace(settings, total_time_fs=10), tmp_path, progress=False, resume=True)
    assert longer.n_steps == 20 and (tmp_path / "thermo.csv").read_text().startswith(thermo)


def test_md_refuses_to_overwrite_or_to_resume_a_different_run(trained_model_file, tmp_path):
    model = load_model(trained_model_file)
    settings = MDSettings(temperature=300, total_time_fs=5, thermostat="langevin", write_interval=5, restart_every=5)
    run_md(model, starts(2), settings, tmp_path, progress=False)
    thermo = (tmp_path / "thermo.csv").read_text()
    with pytest.raises(RemulError, match="already holds an MD run \\(restart.pt, thermo.csv\\); pass --resume"):
        run_md(model, starts(2), settings, tmp_path, progress=False)
    with pytest.raises(RemulError, match="other starting structures \\(2 replicas then, 3 now\\)"):
        run_md(model, starts(3), settings, tmp_path, progress=False, resume=True)
    with pytest.raises(RemulError, match="replica 1 was C2H6O, now CH4"):
        run_md(model, [starts(1)[0], molecule("CH4")], settings, tmp_path, progress=False, resume=True)
    with pytest.raises(RemulError, match="thermostat was 'langevin' but is 'nose-hoover' now"):
        run_md(model, starts(2), dataclasses.replace(settings, thermostat="nose-hoover"), tmp_path, progress=False, resume=True)
    assert (tmp_path / "thermo.csv").read_text() == thermo
    run_md(model, starts(2), dataclasses.replace(settings, total_time_fs=10), tmp_path, progress=False, resume=True)  # longer: fine
    run_md(model, starts(1), settings, tmp_path, progress=False, overwrite=True)
    assert not (tmp_path / "replica_001.traj").exists()


@pytest.mark.slow
def test_compiled_md_follows_the_eager_trajectory(trained_model_file, tmp_path):
    model = load_model(trained_model_file)
    settings = MDSettings(temperature=300, total_time_fs=10, thermostat="nose-hoover", write_interval=5, seed=1)
    run_md(model, starts(2), settings, tmp_path / "eager", progress=False)
    settings.compile = True
    run_md(model, starts(2), settings, tmp_path / "compiled", progress=False)
    for r in range(2):
        eager = ase.io.read(tmp_path / "eager" / f"replica_{r:03d}.traj", index=-1)
        compiled = ase.io.read(tmp_path / "compiled" / f"replica_{r:03d}.traj", index=-1)
        assert len(ase.io.read(tmp_path / "compiled" / f"replica_{r:03d}.traj", index=":")) == 5
        np.testing.assert_allclose(compiled.positions, eager.positions, atol=1e-8)
        assert not np.allclose(compiled.positions, starts(2)[r].positions, atol=1e-3)  # it did move


def test_monitor_reference_is_the_mean_bond_length_over_the_reference_frames():
    reference = [molecule("CH3CH2OH") for _ in range(4)]
    for atoms, length in zip(reference, (0.95, 0.96, 0.98, 0.99)):
        atoms.set_distance(2, 3, length, fix=0)
    start = molecule("CH3CH2OH")
    start.set_distance(2, 3, 1.40, fix=0)  # 0.43 Å above the mean O-H of 0.97 Å
    methane = molecule("CH4")  # not among the reference frames: its own start is its reference
    state = state_from_atoms([start, methane], "cpu", torch.float64)
    state.energy, state.forces = torch.zeros(2, dtype=torch.float64), torch.zeros_like(state.positions)
    monitor = CollapseMonitor(state, 1e9, 0.5, reference)
    bonds = [tuple(b) for b in monitor.bonds.tolist()]
    assert monitor.reference[bonds.index((2, 3))].item() == pytest.approx(0.97)
    assert monitor.reference[-1].item() == pytest.approx(methane.get_distance(0, 4))
    assert monitor.check(state, 0, 0.0)[1] == []
    state.positions[3] += 0.1 * (state.positions[3] - state.positions[2]) / torch.linalg.norm(state.positions[3] - state.positions[2])
    (event,) = monitor.check(state, 5, 0.1)[1]  # 0.53 Å from the mean, 0.10 Å from the start
    assert (event.replica, event.bond, event.deviation) == (0, "O2-H3", pytest.approx(0.53, abs=0.005))


@pytest.mark.parametrize("events", [0, 1, 3, 10, 91])
def test_poisson_interval_has_exact_tail_probabilities(events):
    """At the bounds, seeing >= k (lower) or <= k (upper) events has probability 2.5%, by direct summation."""
    exposure = 7.0
    low, high = poisson_rate_ci(events, exposure)

    def cdf(k, mu):  # P(X <= k), summed in log space
        return sum(math.exp(i * math.log(mu) - mu - math.lgamma(i + 1)) for i in range(k + 1))

    assert cdf(events, high * exposure) == pytest.approx(0.025, rel=1e-6)
    if events:
        assert 1 - cdf(events - 1, low * exposure) == pytest.approx(0.025, rel=1e-6)
    else:
        assert low == 0 and high * exposure == pytest.approx(-math.log(0.025))
    rate = failure_rate(events, 1000 * exposure)
    assert rate["ci95"] == pytest.approx([low, high]) and rate["failure_rate_per_1000_replica_ps"] == pytest.approx(events / exposure)


def test_a_duration_string_without_a_unit_is_refused():
    from remul_ff.errors import RemulError

    with pytest.raises(RemulError, match="the duration '10' has no unit; write '10ps' or '10fs'"):
        parse_duration_fs("10")
    assert parse_duration_fs(10) == 10.0  # a number from Python is fs, as documented
