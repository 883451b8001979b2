"""Test-time symmetrisation: a model's energy averaged over a fixed group of rotations of its input.

``E_G(x) = (1/|G|) Σ_{g∈G} E(g x)`` is exactly invariant under the rotations of ``G`` (a finite
group: relabelling the sum), and its forces ``-∇E_G`` are exactly equivariant under them. For other
rotations it removes the parts of the model's symmetry error that ``G`` averages out (for the cube's
group, every error of angular order 1, 2, 3 and 5), at ``|G|`` forward and backward passes per
call. The model itself stays unconstrained; only its use is averaged. Issue 12 asks whether this is
worth its cost for MD stability (``benchmarks/stability/test_time_rotations.py``).

The groups are the rotations among the 48 signed permutation matrices of the axes:

* 4, ``D2``: the identity and the half-turns about x, y and z;
* 12, ``T``: the tetrahedron's rotations (cyclic permutations of the axes times ``D2``);
* 24, ``O``: the cube's rotations (every permutation with the right signs).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from remul_ff.models.common import inference_model
from remul_ff.models.forces import energy_model_call

GROUP_ORDERS = (4, 12, 24)


def rotation_group(order: int) -> torch.Tensor:
    """``[order, 3, 3]`` float64 rotation matrices of ``D2`` (4), ``T`` (12) or ``O`` (24); identity first."""
    if order not in GROUP_ORDERS:
        raise ValueError(f"test-time rotations come as a group of {', '.join(map(str, GROUP_ORDERS))} rotations, not {order}.")
    rotations = []
    for permutation in itertools.permutations(range(3)):  # identity first
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = torch.zeros(3, 3, dtype=torch.float64)
            matrix[range(3), permutation] = torch.tensor(signs, dtype=torch.float64)
            if torch.linalg.det(matrix) > 0 and _in_group(permutation, order):
                rotations.append(matrix)
    return torch.stack(rotations)


def _in_group(permutation: tuple[int, ...], order: int) -> bool:
    """Whether the axis permutation belongs to the group of ``order`` (the signs are fixed by det = +1)."""
    if order == 4:
        return permutation == (0, 1, 2)
    cyclic = permutation in ((0, 1, 2), (1, 2, 0), (2, 0, 1))
    return cyclic or order == 24


class RotationAveraged(nn.Module):
    """Energy-only model whose per-atom energies are ``model``'s averaged over a rotation group.

    Args:
        model: An energy-only model (its ``elements``, ``training_domain`` and ``r_max`` speak for this one).
        order: Size of the group: 4, 12 or 24 (:func:`rotation_group`).
    """

    def __init__(self, model: nn.Module, order: int) -> None:
        super().__init__()
        self.model = model
        self.order = order
        reference = next(model.parameters())
        self.register_buffer("rotations", rotation_group(order).to(reference.device, reference.dtype))
        self.elements = model.elements
        self.training_domain = getattr(model, "training_domain", {})
        self.r_max = getattr(model, "r_max", None)

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, molecule_index: torch.Tensor, layout=None) -> torch.Tensor:
        """``[n]`` per-atom energies averaged over the group (a rotation about the origin: the models
        see relative vectors only, so where the molecule sits does not matter)."""
        rotations = self.rotations
        energies = [energy_model_call(self.model, positions @ r.T, atomic_numbers, molecule_index, layout) for r in rotations]
        return torch.stack(energies).mean(0)

    def for_inference(self) -> RotationAveraged:
        """The average of the model's inference copy (:func:`~remul_ff.models.common.inference_model`)."""
        return RotationAveraged(inference_model(self.model), self.order)


def with_test_time_rotations(model: nn.Module, order: int) -> nn.Module:
    """``model`` averaged over a rotation group of ``order`` (:class:`RotationAveraged`), or itself for 0."""
    return model if order == 0 else RotationAveraged(model, order)
