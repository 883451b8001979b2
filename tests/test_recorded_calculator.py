"""The calculator's recorded force call (remul_ff.integrations.recorded), its GPU path.

On the CPU the calculator is made to take the path with a recorder that replays by calling the
function under the host-sync guard: the results must be the plain calculator's along an MD run,
recorded once per composition, and a call that cannot be recorded runs plainly after one warning.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.verlet import VelocityVerlet

from remul_ff.integrations import REMULCalculator
from remul_ff.integrations.recorded import recordable
from tests.helpers import jittered_molecules, tiny_model
from tests.host_sync import FailingRecorder, ReplayingRecorder


def recording_calculator(model_file, recorder=ReplayingRecorder) -> REMULCalculator:
    calculator = REMULCalculator(model_file)
    calculator.record_calls, calculator.new_recorder = True, recorder  # what CUDA gets by default
    return calculator


def trajectory(calculator, steps: int = 15) -> tuple[np.ndarray, np.ndarray]:
    atoms = jittered_molecules("CH3CH2OH", 1, seed=7, scale=0.03)[0]
    atoms.calc = calculator
    VelocityVerlet(atoms, 0.5 * units.fs).run(steps)
    return atoms.positions.copy(), atoms.get_forces()


def test_a_recorded_force_call_follows_the_plain_calculators_md(trained_model_file):
    recording = recording_calculator(trained_model_file)
    positions, forces = trajectory(recording)
    plain_positions, plain_forces = trajectory(REMULCalculator(trained_model_file))
    np.testing.assert_allclose(positions, plain_positions, atol=1e-10, rtol=0)
    np.testing.assert_allclose(forces, plain_forces, atol=1e-9, rtol=0)
    composition, recorded = recording._recorded
    assert recorded is not None and recorded.recorder.warm_ups > 0  # it did take the path
    water = molecule("H2O")
    water.calc = recording
    water.get_forces()
    assert recording._recorded[0] is not composition  # a new composition is recorded again


def test_a_force_call_that_cannot_be_recorded_runs_plainly_after_a_warning(trained_model_file):
    failing = recording_calculator(trained_model_file, FailingRecorder)
    with pytest.warns(UserWarning, match="the force call could not be recorded"):
        positions, forces = trajectory(failing, steps=3)
    assert not failing.record_calls
    plain_positions, plain_forces = trajectory(REMULCalculator(trained_model_file), steps=3)
    np.testing.assert_allclose(forces, plain_forces, atol=1e-9, rtol=0)


def test_only_models_with_fixed_pairs_are_recorded():
    assert recordable(tiny_model(), 9) and recordable(tiny_model("egnn"), 9)
    assert not recordable(tiny_model(), 65)  # n^2 pairs: the radius graph, which sizes on the host
    assert not recordable(tiny_model(), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_calculator_on_cuda_replays_a_cuda_graph(trained_model_file):
    cuda = REMULCalculator(trained_model_file, device="cuda")
    positions, forces = trajectory(cuda)
    plain_positions, plain_forces = trajectory(REMULCalculator(trained_model_file))
    assert cuda.record_calls and cuda._recorded[1] is not None
    np.testing.assert_allclose(forces, plain_forces, atol=1e-8, rtol=0)
