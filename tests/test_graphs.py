"""The recorded MD step (remul_ff.md.graphs): same trajectory as the plain step, fixed memory, re-recording.

A CPU cannot record CUDA graphs, so most tests give :class:`StepGraph` a recorder that keeps the
function and runs it on every replay, under the host-sync guard: what a real recording needs
(nothing read back from the device, results written into the state's own tensors) is checked
here; the CUDA test at the end records for real where a GPU is present.
"""

from __future__ import annotations

import pytest
import torch
from ase import units

from remul_ff.md import MDSettings
from remul_ff.md.engine import _make_step, prepare_state
from remul_ff.md.graphs import DYNAMIC_FIELDS, StepGraph, graphable
from remul_ff.md.integrators import langevin_baoab_step, nose_hoover_chain_step, velocity_verlet_step
from remul_ff.models.common import inference_model, with_fixed_pairs
from tests.helpers import jittered_molecules, tiny_model
from tests.host_sync import FailingRecorder, ReplayingRecorder

DT, KT = 0.5 * units.fs, units.kB * 500


def nose_hoover(state, model):
    return nose_hoover_chain_step(state, model, DT, KT, on_host=False)


def verlet(state, model):
    return velocity_verlet_step(state, model, DT)


def fixed_pair_model(kind: str = "transformer"):
    return with_fixed_pairs(inference_model(tiny_model(kind)), 9)


def thermostatted(model, n: int = 3):
    settings = MDSettings(temperature=500, timestep_fs=0.5, thermostat="nose-hoover", seed=4, tdamp_fs=25.0)
    return prepare_state(model, jittered_molecules("CH3CH2OH", n, seed=4, scale=0.02), settings, "cpu", torch.float64)


def assert_same_state(a, b) -> None:
    for name in DYNAMIC_FIELDS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=0, rtol=0)
    for key in a.thermostat:
        torch.testing.assert_close(a.thermostat[key], b.thermostat[key], atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["transformer", "egnn"])
@pytest.mark.parametrize("step", [nose_hoover, verlet])
def test_a_replayed_step_gives_the_plain_steps_trajectory_in_fixed_memory(kind, step):
    model = fixed_pair_model(kind)
    plain, replayed = thermostatted(model), thermostatted(model)
    graph = StepGraph(step, recorder=ReplayingRecorder)
    graph(replayed, model)  # records (warm-up on copies: the state must not move), then replays once
    step(plain, model)
    assert_same_state(replayed, plain)
    addresses = [getattr(replayed, name).data_ptr() for name in DYNAMIC_FIELDS]
    for _ in range(10):
        assert graph(replayed, model) is replayed
        step(plain, model)
    assert_same_state(replayed, plain)
    assert [getattr(replayed, name).data_ptr() for name in DYNAMIC_FIELDS] == addresses  # a replay writes in place
    assert graph.recordings == 1 and graph.recorded.warm_ups > 0
    if step is nose_hoover:
        assert float(plain.thermostat["p_eta"].abs().max()) > 0  # the chain did act


def test_removing_a_replica_records_the_step_again():
    model = fixed_pair_model()
    plain, replayed = thermostatted(model, 4), thermostatted(model, 4)
    graph = StepGraph(nose_hoover, recorder=ReplayingRecorder)
    keep = torch.tensor([True, False, True, True])
    for _ in range(3):
        graph(replayed, model), nose_hoover(plain, model)
    replayed, _ = replayed.select(keep)
    plain, _ = plain.select(keep)
    for _ in range(3):
        graph(replayed, model), nose_hoover(plain, model)
    assert graph.recordings == 2
    assert_same_state(replayed, plain)


def test_a_step_that_cannot_be_recorded_runs_plainly_with_a_warning():
    model = fixed_pair_model()
    plain, fallback = thermostatted(model), thermostatted(model)
    graph = StepGraph(nose_hoover, recorder=FailingRecorder)
    with pytest.warns(UserWarning, match="could not be recorded as a CUDA graph"):
        graph(fallback, model)
    for _ in range(3):
        graph(fallback, model)
    for _ in range(4):
        nose_hoover(plain, model)
    assert "not permitted" in graph.failure
    assert_same_state(fallback, plain)


def test_the_guard_would_catch_a_step_that_reads_the_device():
    model = fixed_pair_model()
    state = thermostatted(model)
    host_chain = StepGraph(lambda s, m: nose_hoover_chain_step(s, m, DT, KT, on_host=True), recorder=ReplayingRecorder)
    with pytest.raises(AssertionError, match="reads device values"):
        host_chain(state, model)


def test_only_fixed_pair_cuda_runs_are_recorded():
    fixed, radius = fixed_pair_model(), inference_model(tiny_model())
    assert graphable(fixed, torch.device("cuda"))
    assert not graphable(radius, torch.device("cuda"))  # the radius graph sizes its output on the host
    assert not graphable(fixed, torch.device("cpu"))


def langevin_state(model, init: bool = True):
    settings = MDSettings(temperature=500, timestep_fs=0.5, thermostat="langevin", seed=4)
    state = prepare_state(model, jittered_molecules("CH3CH2OH", 3, seed=4, scale=0.02), settings, "cpu", torch.float64)
    if not init:
        del state.thermostat["heat"]
    return settings, state


def test_a_replayed_langevin_step_draws_the_plain_steps_noise_on_the_host():
    model = fixed_pair_model()
    settings, plain = langevin_state(model)
    _, replayed = langevin_state(model)
    old_generator, new_generator = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    graph = StepGraph(_make_step(settings, KT, new_generator), recorder=ReplayingRecorder)
    friction = settings.friction / units.fs
    for _ in range(8):  # the step as written before the noise moved to the host, generator and all
        langevin_baoab_step(plain, model, DT, KT, friction, old_generator)
        graph(replayed, model)
    assert_same_state(replayed, plain)
    assert graph.recordings == 1 and float(plain.thermostat["heat"].abs().max()) > 0
    assert torch.equal(old_generator.get_state(), new_generator.get_state())  # one draw per step, none in the warm-up


def test_a_step_that_adds_a_thermostat_entry_is_not_recorded():
    model = fixed_pair_model()
    settings, state = langevin_state(model, init=False)  # the heat account would appear in the first step
    graph = StepGraph(_make_step(settings, KT, torch.Generator().manual_seed(9)), recorder=ReplayingRecorder)
    with pytest.warns(UserWarning, match="changes the thermostat's entries"):
        graph(state, model)
    assert graph.failure is not None and "heat" in state.thermostat


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("step", [nose_hoover, verlet])
def test_a_cuda_graph_replays_the_plain_step_on_the_gpu(step):
    model = fixed_pair_model().to("cuda")
    settings = MDSettings(temperature=500, timestep_fs=0.5, thermostat="nose-hoover", seed=4, tdamp_fs=25.0)
    molecules = jittered_molecules("CH3CH2OH", 8, seed=4, scale=0.02)
    plain, replayed = (prepare_state(model, molecules, settings, "cuda", torch.float64) for _ in range(2))
    graph = StepGraph(step)
    for _ in range(20):
        graph(replayed, model), step(plain, model)
    assert graph.failure is None and graph.recordings == 1
    for name in DYNAMIC_FIELDS:
        torch.testing.assert_close(getattr(replayed, name), getattr(plain, name), atol=1e-10, rtol=0)
