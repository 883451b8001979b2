"""EGNN potential (Satorras, Hoogeboom & Welling 2021): the equivariant baseline.

Message passing on the cutoff graph with invariant edge inputs only (squared distance and a
radial basis), every message weighted by the smooth cutoff envelope. With
``update_coordinates`` the layers also move an internal copy of the coordinates along
``x_i - x_j`` (the E(n)-equivariant coordinate stream of the paper); later layers read distances
from it. Energy is a sum of atomic energies, so it is E(3) invariant by construction and the
autograd forces of :func:`remul_ff.models.forces.predict` are equivariant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from remul_ff.data.neighbors import MoleculeLayout, edge_vectors
from remul_ff.models.common import RADIAL_BASES, AtomwiseEnergyModel, polynomial_envelope, scatter_sum
from remul_ff.schema import AT_LEAST_1, DISTANCE, ENVELOPE_EXPONENT, bounded, one_of


@dataclass
class EGNNConfig:
    """Hyperparameters of :class:`EGNN` (``model`` section with ``kind: egnn``).

    Attributes:
        width: Node and message feature size (64-128 in the EGNN paper's energy models).
        depth: Message-passing layers (4-7 in the paper).
        r_max: Cutoff radius in Å.
        num_radial: Size of the radial basis of the distance.
        radial_basis: ``"bessel"`` or ``"gaussian"``.
        envelope_p: Exponent of the polynomial cutoff envelope.
        update_coordinates: Run the equivariant coordinate update in each layer.
        neighbour_norm: Messages are summed and divided by this (typical neighbour count).
    """

    width: int = bounded(128, *AT_LEAST_1)
    depth: int = bounded(4, *AT_LEAST_1)
    r_max: float = bounded(5.0, *DISTANCE)
    num_radial: int = bounded(16, *AT_LEAST_1)
    radial_basis: str = one_of(*RADIAL_BASES)
    envelope_p: int = bounded(6, *ENVELOPE_EXPONENT)
    update_coordinates: bool = True
    neighbour_norm: float = 8.0


def _mlp(sizes: list[int], last_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2 or last_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class EGNNLayer(nn.Module):
    """One E(n)-equivariant layer: invariant messages, node update, optional coordinate update."""

    def __init__(self, config: EGNNConfig) -> None:
        super().__init__()
        w = config.width
        self.basis = RADIAL_BASES[config.radial_basis](config.r_max, config.num_radial)
        self.message = _mlp([2 * w + 1 + config.num_radial, w, w], last_activation=True)
        self.node = _mlp([2 * w, w, w])
        self.coordinate = _mlp([w, w, 1]) if config.update_coordinates else None
        self.norm = config.neighbour_norm

    def forward(
        self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor, envelope: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return updated features ``[n, width]`` and coordinates ``[n, 3]``."""
        centre, neighbour = edge_index
        diff = x[centre] - x[neighbour]
        d2 = (diff * diff).sum(-1, keepdim=True)
        edge_in = torch.cat([h[centre], h[neighbour], d2, self.basis(torch.sqrt(d2.squeeze(-1) + 1e-12))], dim=-1)
        messages = self.message(edge_in) * envelope[:, None]
        aggregated = scatter_sum(messages, centre, h.shape[0]) / self.norm
        h = h + self.node(torch.cat([h, aggregated], dim=-1))
        if self.coordinate is not None:
            # The envelope again: the MLP's bias makes coordinate(0) non-zero at the cutoff.
            step = diff / (torch.sqrt(d2) + 1.0) * self.coordinate(messages) * envelope[:, None]
            x = x + scatter_sum(step, centre, x.shape[0]) / self.norm
        return h, x


class EGNN(AtomwiseEnergyModel):
    """Energy-only EGNN potential; energies invariant and forces equivariant by construction."""

    def __init__(self, config: EGNNConfig, elements: list[int], e0s: list[float], scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.config = config
        self.r_max = config.r_max
        self.init_common(config.width, elements, e0s, scale, shift)
        self.layers = nn.ModuleList(EGNNLayer(config) for _ in range(config.depth))

    def forward(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, molecule_index: torch.Tensor, layout: MoleculeLayout | None = None
    ) -> torch.Tensor:
        """``[n]`` float64 atomic energies in eV (``layout``: the batch's, if known)."""
        return self.energies_on_pairs(positions, atomic_numbers, self.pairs(positions, molecule_index, layout)[0])

    def energies_on_pairs(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``[n]`` atomic energies with the interacting pairs given (``edge_index`` ``[2, E]``)."""
        species = self.elements(atomic_numbers)
        edge_vec = edge_vectors(positions, edge_index)
        envelope = polynomial_envelope(torch.linalg.norm(edge_vec, dim=-1), self.r_max, self.config.envelope_p)
        h, x = self.embedding(species), positions
        for layer in self.layers:
            h, x = layer(h, x, edge_index, envelope)
        return self.atomic_energies(h, species)
