"""One molecule's energy and forces replayed from a CUDA graph: the ASE calculator's GPU path.

An ASE step evaluates one small molecule. On a GPU that is a few hundred kernels of a few µs
each, so launches, not arithmetic, set the time (an eager GPU step of ethanol is slower than a
CPU's). With every same-molecule pair fixed (the envelope is zero
beyond ``r_max``: the same energies as the radius graph) the force call keeps its shapes and reads
nothing back, so it is recorded once per composition and replayed: the positions are copied in,
the graph runs, the results are copied out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from remul_ff.data.batch import Structure, device_batch
from remul_ff.models.common import with_fixed_pairs
from remul_ff.models.forces import Prediction, predict
from remul_ff.utils.cuda_graphs import CudaGraphRecorder, record


def recordable(model: nn.Module, n_atoms: int) -> bool:
    """Whether ``model``'s force call on ``n_atoms`` atoms can take fixed pairs (and so be recorded)."""
    return n_atoms >= 2 and getattr(with_fixed_pairs(model, n_atoms), "pair_mode", None) == "all"


class RecordedForces:
    """``predict(model, ...)`` for one composition, recorded at the first positions and replayed.

    Args:
        model: An energy-only model with fixed pairs available (:func:`recordable`).
        numbers: ``[n]`` atomic numbers of the composition.
        positions: ``[n, 3]`` the first positions (Å), used for the warm-up calls.
        dtype: The model's dtype.
        device: The model's device.
        recorder: Makes the recorder (tests pass one that replays by calling the function).

    Raises:
        remul_ff.utils.cuda_graphs.RecordingFailed: after a warning, when the call cannot be recorded.
    """

    def __init__(
        self,
        model: nn.Module,
        numbers: np.ndarray,
        positions: np.ndarray,
        dtype: torch.dtype,
        device: torch.device,
        recorder: Callable[[], object] = CudaGraphRecorder,
    ) -> None:
        self.model = with_fixed_pairs(model, len(numbers))
        self.batch = device_batch([Structure(positions, numbers)], device, dtype, every_pair=True)
        self.output: Prediction | None = None
        self.recorder = record(recorder, lambda: predict(self.model, self.batch), self._forward, "the force call")

    def _forward(self) -> None:
        self.output = predict(self.model, self.batch)

    def __call__(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(energy, forces [n, 3], atomic energies [n])`` at ``positions``; valid until the next call."""
        self.batch.positions.copy_(torch.from_numpy(positions))  # into the memory the graph reads
        self.recorder.replay()
        return self.output.energy[0], self.output.forces, self.output.atomic_energies
