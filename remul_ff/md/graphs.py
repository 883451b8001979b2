"""A whole batched MD step replayed from a CUDA graph: one launch per step instead of hundreds.

On a GPU a batched MD step of small molecules is launch-bound: hundreds of kernel launches per
step, each with little arithmetic, leave the GPU mostly idle. Once a step reads nothing back
from the device (every same-molecule pair fixed for the run, the Nosé–Hoover chain in device
tensors: ``tests/test_md.py`` checks both) the whole step, forces included, can be recorded once
and replayed.

A replay reads and writes fixed memory, so :class:`StepGraph` makes the state's tensors that
memory: the recorded step runs the integrator on a shallow copy of the state and copies its
results back into the state's own tensors. The state object and its tensors stay the same from
step to step, and the collapse monitor, writers and restart files read them as before. A new
layout (replicas removed after a collapse, a resumed run, another model) is recorded again.

Langevin's noise is drawn on the host from the run's generator, so that a seed gives the same run
on every device. That part of the step (:class:`HostThenDevice`) runs every step outside the graph
and copies the noise into a buffer the graph reads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from remul_ff.md.state import MDState
from remul_ff.utils.cuda_graphs import CudaGraphRecorder, RecordingFailed, record

Step = Callable[[MDState, nn.Module], MDState]


@dataclass
class HostThenDevice:
    """A step in two parts: ``host(state)``, run every step and never recorded (Langevin draws its
    noise on the host there), then ``device(state, model)``, which may be recorded."""

    host: Callable[[MDState], None]
    device: Step

    def __call__(self, state: MDState, model: nn.Module) -> MDState:
        self.host(state)
        return self.device(state, model)


# Fields an integrator replaces every step (the thermostat's tensors are handled alongside).
DYNAMIC_FIELDS = ("positions", "momenta", "forces", "energy")


def _shadow(state: MDState, clone: bool = False) -> MDState:
    """A shallow copy the integrator may rebind freely (``clone``: with its own dynamic tensors too)."""
    twin = copy.copy(state)
    twin.thermostat = dict(state.thermostat)
    if clone:
        for name in DYNAMIC_FIELDS:
            setattr(twin, name, getattr(state, name).clone())
        twin.thermostat = {k: v.clone() for k, v in state.thermostat.items()}
    return twin


def _own_tensors(state: MDState) -> None:
    """Give the state contiguous tensors of its own, the fixed memory a replay writes to."""
    for name in DYNAMIC_FIELDS:
        setattr(state, name, getattr(state, name).detach().clone(memory_format=torch.contiguous_format))
    state.thermostat = {k: v.clone(memory_format=torch.contiguous_format) for k, v in state.thermostat.items()}


def layout(state: MDState, model: nn.Module) -> tuple:
    """What a recorded step depends on: the model and the addresses and shapes of the state's tensors."""
    tensors = [getattr(state, name) for name in DYNAMIC_FIELDS] + [state.molecule_index, state.masses]
    tensors += [state.thermostat[k] for k in sorted(state.thermostat)]
    return (id(model), tuple(sorted(state.thermostat)), *((t.data_ptr(), tuple(t.shape), t.dtype) for t in tensors))


class StepGraph:
    """``step(state, model)`` recorded once per :func:`layout` and replayed.

    Args:
        step: An integrator step that reads nothing back from the device (see the module docstring).
        recorder: Makes the object that records and replays (default :class:`CudaGraphRecorder`;
            tests pass one that runs the function eagerly).

    If recording fails (an operation that cannot be recorded, such as a host-device copy), a
    warning says why and every later step runs ``step`` directly: slower, same trajectory.
    """

    def __init__(self, step: Step, recorder: Callable[[], object] = CudaGraphRecorder) -> None:
        self.step, self.new_recorder = step, recorder
        self.host_part = step.host if isinstance(step, HostThenDevice) else None
        self.body = step.device if isinstance(step, HostThenDevice) else step
        self.key: tuple | None = None
        self.recorded = None
        self.failure: str | None = None
        self.recordings = 0

    def __call__(self, state: MDState, model: nn.Module) -> MDState:
        if self.failure is not None:
            return self.step(state, model)
        if self.host_part is not None:
            self.host_part(state)
        if layout(state, model) != self.key:
            try:
                self._record(state, model)
            except RecordingFailed as failure:
                self.failure = str(failure)
                return self.body(state, model)
        self.recorded.replay()
        return state

    def _record(self, state: MDState, model: nn.Module) -> None:
        state.force_batches(), state.atoms_per_replica  # fill the state's caches: they size tensors on the host
        _own_tensors(state)
        self.recorded = record(
            self.new_recorder,
            lambda: _same_entries(self.body(_shadow(state, clone=True), model), state),
            lambda: self._step_in_place(state, model),
            "the MD step",
        )
        self.key = layout(state, model)
        self.recordings += 1

    def _step_in_place(self, state: MDState, model: nn.Module) -> None:
        """One step whose results land in ``state``'s own tensors."""
        moved = _same_entries(self.body(_shadow(state), model), state)
        for name in DYNAMIC_FIELDS:
            getattr(state, name).copy_(getattr(moved, name))
        for key, value in state.thermostat.items():
            value.copy_(moved.thermostat[key])


def _same_entries(moved: MDState, state: MDState) -> MDState:
    """``moved``, after checking that the step kept the thermostat's entries (a new one would have no
    memory of its own to be replayed into)."""
    if set(moved.thermostat) != set(state.thermostat):
        raise RuntimeError(f"the step changes the thermostat's entries ({sorted(state.thermostat)} -> {sorted(moved.thermostat)})")
    return moved


def graphable(model: nn.Module, device: torch.device) -> bool:
    """Whether a run's step can be recorded: on CUDA, with fixed pairs.

    Models that find pairs within ``r_max`` every step size their output on the host
    (:func:`remul_ff.models.common.with_fixed_pairs` avoids it up to 64 atoms).
    """
    fixed_pairs = getattr(model, "pair_mode", None) == "all"  # a committee finds its members' own pairs
    return device.type == "cuda" and fixed_pairs
