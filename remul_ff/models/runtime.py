"""One way from what a user holds to a model ready for inference.

A model file, a loaded model, or several of either (a committee) become one module: loaded, checked
(a remul-ff energy model; committee members trained on the same elements and level of theory), on
the requested device and dtype, frozen in eval mode, averaged over a rotation group if asked, and in
its inference form (the transformer merges its edge layers: same energies, fewer operations). The
ASE calculator, :func:`~remul_ff.md.engine.run_md`, the torch-sim model, ``compare`` and ``learn``
all take their models from here, so a committee means the same thing everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, Union, runtime_checkable

import torch
from torch import nn

from remul_ff.models.committee import Committee, check_committee
from remul_ff.models.common import ElementTable, inference_model
from remul_ff.models.files import load_model
from remul_ff.models.symmetrize import with_test_time_rotations


@runtime_checkable
class EnergyModel(Protocol):
    """What remul-ff asks of a potential: the transformer, EGNN, a committee or a rotation average.

    ``forward`` gives the ``[n]`` per-atom energies in eV (float64) of the molecules in one batch
    (:func:`~remul_ff.models.forces.predict` turns them into energies and forces); ``elements`` checks
    atomic numbers and maps them to species. A model may also take ``layout``, the batch's
    :class:`~remul_ff.data.neighbors.MoleculeLayout` (molecule sizes and pairs found on the host);
    :func:`~remul_ff.models.forces.energy_model_call` gives it to those whose ``forward`` names it.
    """

    elements: ElementTable

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, molecule_index: torch.Tensor) -> torch.Tensor: ...


ModelSource = Union[str, os.PathLike, nn.Module, Sequence[Union[str, os.PathLike, nn.Module]]]
"""A model file, a loaded model, or a list of them (a committee)."""


def ready_members(
    source: ModelSource, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64, test_time_rotations: int = 0
) -> list[nn.Module]:
    """The inference-ready members of ``source`` (one for a single model); see the module docstring.

    Args:
        source: A ``model.pt`` path, a loaded remul-ff model, or a sequence of either.
        device: Where the members run.
        dtype: Their floating-point dtype.
        test_time_rotations: Average each member over a rotation group of this order (0: off).

    Raises:
        ValueError: ``source`` is empty or holds something that is not a remul-ff energy model.
        CheckpointError: A model file is missing or corrupt, or the members cannot form a committee.
    """
    items = [source] if isinstance(source, (str, os.PathLike, nn.Module)) else list(source)
    if not items:
        raise ValueError("no model given: give a model file, a loaded model, or a list of them for a committee.")
    names = [str(item) if isinstance(item, (str, os.PathLike)) else f"model {k + 1}" for k, item in enumerate(items)]
    members = [load_model(item, device, dtype) if isinstance(item, (str, os.PathLike)) else item for item in items]
    for name, member in zip(names, members):
        if not (isinstance(member, EnergyModel) and isinstance(member.elements, ElementTable)):
            raise ValueError(f"{name} is a {type(member).__name__}, not a remul-ff energy model; load one with remul_ff.models.load_model.")
    if len(members) > 1:
        check_committee(members, names)
    members = [with_test_time_rotations(member.to(device, dtype), test_time_rotations) for member in members]
    return [inference_model(member.eval().requires_grad_(False)) for member in members]


def ready_model(
    source: ModelSource, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64, test_time_rotations: int = 0
) -> nn.Module:
    """One module for ``source``: its only member, or the :class:`Committee` of its members
    (arguments as for :func:`ready_members`)."""
    members = ready_members(source, device, dtype, test_time_rotations)
    return members[0] if len(members) == 1 else Committee(members)
