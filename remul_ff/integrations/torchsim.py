"""remul-ff as a torch-sim model: batched MD, relaxations and autobatching in torch-sim's engine.

torch-sim (PyPI ``torch-sim-atomistic``, the optional extra ``remul-ff[torchsim]``) integrates a
:class:`~torch_sim.state.SimState` batch of any number of systems with one model call per step.
:class:`REMULTorchSimModel` answers that call with the energies and forces of every system, as
``nequip.integrations.torchsim`` does for NequIP::

    import torch_sim as ts
    from remul_ff.integrations.torchsim import REMULTorchSimModel

    model = REMULTorchSimModel("runs/xtb_ethanol/model.pt", dtype=torch.float64)
    state = ts.integrate(system=[molecule("CH3CH2OH")] * 64, model=model, integrator=ts.nvt_langevin,
                         n_steps=1000, temperature=300, timestep=0.0005)   # ps, as torch-sim's metal units

Molecules only: a periodic state is refused, as in :class:`~remul_ff.integrations.REMULCalculator`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from remul_ff.data.batch import AtomicBatch
from remul_ff.data.neighbors import MoleculeLayout
from remul_ff.errors import DataError, RemulError
from remul_ff.md.state import call_layout
from remul_ff.models.common import inference_model, scatter_sum
from remul_ff.models.forces import predict
from remul_ff.models.runtime import ready_model
from remul_ff.utils.devices import resolve_device

try:
    import torch_sim
    from torch_sim.models.interface import ModelInterface
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise RemulError("torch-sim is not installed; pip install 'remul-ff[torchsim]' (torch-sim-atomistic).") from exc


class REMULTorchSimModel(ModelInterface):
    """A remul-ff model (or committee) behind torch-sim's ``ModelInterface``.

    Args:
        model: A ``model.pt`` path, a list of them (a committee: the members' mean), or a loaded
            energy-only model.
        device: Where to run (default: CUDA when available).
        dtype: The model's and the state's floating type.
    """

    def __init__(
        self,
        model: str | os.PathLike | Sequence[str | os.PathLike] | nn.Module,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self._device = resolve_device(str(device) if device is not None else "auto")
        self._dtype = dtype
        self._compute_forces, self._compute_stress = True, False  # molecules: no cell, no stress
        self.model = inference_model(_as_module(model, self._device, dtype).to(self._device, dtype).eval().requires_grad_(False))
        self._checked: tuple = (None, -1)  # the atomic numbers last checked and their version (a check syncs the GPU)
        self._layout: tuple = (None, -1, None)  # the last system_idx, its version and its layout (found once: syncs)

    def forward(self, state: torch_sim.SimState | dict, **kwargs) -> dict[str, torch.Tensor]:
        """``{"energy": [n_systems], "forces": [n_atoms, 3]}`` in eV and eV/Å."""
        if isinstance(state, dict):
            state = torch_sim.SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        if bool(torch.as_tensor(state.pbc).any()):
            raise DataError("the torch-sim state is periodic, which remul-ff does not support yet; use pbc=False for molecules.")
        numbers = state.atomic_numbers
        if numbers is not self._checked[0] or numbers._version != self._checked[1]:  # the same tensor comes every step
            self.model.elements.check(numbers)
            self._checked = (numbers, numbers._version)
        batch = AtomicBatch(
            _centred(state.positions, state.system_idx, state.n_systems).to(self._dtype),
            state.atomic_numbers,
            state.system_idx,
            state.n_systems,
            layout=self._layout_of(state.system_idx, state.n_systems),
        )
        prediction = predict(self.model, batch)
        return {"energy": prediction.energy.to(self._dtype), "forces": prediction.forces}

    def _layout_of(self, system_idx: torch.Tensor, n_systems: int) -> MoleculeLayout:
        """``system_idx``'s layout (:func:`~remul_ff.md.state.call_layout`), kept while torch-sim passes the same tensor (every step)."""
        index, version, layout = self._layout
        if system_idx is not index or system_idx._version != version or layout.sizes.numel() != n_systems:
            layout = call_layout(system_idx, n_systems)
            self._layout = (system_idx, system_idx._version, layout)
        return layout


def _as_module(model, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return model if isinstance(model, nn.Module) else ready_model(model, device, dtype)


def _centred(positions: torch.Tensor, system_idx: torch.Tensor, n_systems: int) -> torch.Tensor:
    """Each system moved to its mean position, in float64 (float32 far from the origin rounds bond vectors)."""
    positions = positions.double()
    counts = scatter_sum(torch.ones_like(positions[:, 0]), system_idx, n_systems)
    mean = scatter_sum(positions, system_idx, n_systems) / counts[:, None]
    return positions - mean[system_idx]


__all__ = ["REMULTorchSimModel"]
